"""The aggregation task: verify and summarise one trajectory size, and publish the run's artifacts.

``aggregate_size(run_dir, size)`` calls :func:`priorflow.store.aggregate` (every done mark
checked against its data, per-member summaries, consolidated metadata; nothing is written when
the marks have not changed) and creates three artifacts, keyed per run and size so that the UI
lists them (``priorflow-<run_id>-<group>-members`` / ``-report`` / ``-store``):

- a table of members: size, date, member, seed, seconds, device, worker host, SLURM job id and
  GPU ids the job saw, mean, std, finite;
- a markdown report: config summary, plan, timings, where the store is and how to open it;
- a link to the store.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from tasks.keys import artifact_key

MEMBER_COLUMNS = (
    "size",
    "date",
    "member",
    "seed",
    "seconds",
    "device",
    "host",
    "slurm_job",
    "gpus",
    "mean",
    "std",
    "finite",
)


def artifact_keys(run_id: str, group: str) -> dict[str, str]:
    """The keys of one size's artifacts: ``members``, ``report``, ``store``."""
    return {
        kind: artifact_key("priorflow", run_id, group, kind)
        for kind in ("members", "report", "store")
    }


def member_rows(marks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per done mark (:data:`MEMBER_COLUMNS`), in date then member order."""
    rows = []
    for mark in marks:
        record = mark.get("record") or {}
        seconds = record.get("seconds")
        rows.append(
            {
                "size": mark.get("size"),
                "date": str(mark.get("start_date", ""))[:13],
                "member": mark.get("member"),
                "seed": str(mark.get("seed")),  # 63-bit: a string survives JSON/JS intact
                "seconds": round(seconds, 2) if isinstance(seconds, int | float) else None,
                "device": record.get("device"),
                "host": record.get("host"),
                "slurm_job": record.get("slurm_job_id"),
                "gpus": ",".join(str(g) for g in record.get("gpu_ids") or []) or None,
                "mean": _rounded(mark.get("mean")),
                "std": _rounded(mark.get("std")),
                "finite": mark.get("finite"),
            }
        )
    return rows


def _job_order(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


def _rounded(value: Any, digits: int = 5) -> Any:
    return float(f"{value:.{digits}g}") if isinstance(value, int | float) else value


def report_markdown(
    attrs: dict[str, Any], group: str, summary: dict[str, Any], rows: list[dict], store: Path
) -> str:
    """The run report of one size as markdown."""
    schema = attrs.get("priorflow_schema", {})
    info = schema.get("groups", {}).get(group, {})
    seconds = [r["seconds"] for r in rows if isinstance(r["seconds"], int | float)]
    config = ", ".join(f"{k}={v}" for k, v in (attrs.get("sampler_config") or {}).items())
    devices = sorted({str(r["device"]) for r in rows if r["device"]})
    hosts = sorted({str(r["host"]) for r in rows if r["host"]})
    batch_jobs = sorted({str(r["slurm_job"]) for r in rows if r.get("slurm_job")}, key=_job_order)
    lines = [
        f"# priorflow run `{attrs.get('run_id')}`: {group}",
        "",
        "## Config",
        "",
        "| key | value |",
        "|---|---|",
        f"| model | `{attrs.get('model_path')}` ({attrs.get('model_target')}) |",
        f"| checkpoint sha256 | `{str(attrs.get('checkpoint_sha256'))[:16]}` |",
        f"| sampler | {attrs.get('sampler')} ({config or 'defaults'}), {attrs.get('steps')} steps |",
        f"| precision | {attrs.get('precision')} |",
        f"| blankets | K={attrs.get('blanket_size')}, overlap {attrs.get('overlap')},"
        f" fold {attrs.get('fold_mode')} |",
        f"| run seed | {attrs.get('run_seed')} |",
        f"| flow run | `{attrs.get('flow_run_id')}` |",
        "",
        "## Plan",
        "",
        "| group | states T0 | padded T_pad | blankets N | dates | members/date | members |",
        "|---|---|---|---|---|---|---|",
        f"| {group} | {info.get('states')} | {info.get('padded_size')} |"
        f" {info.get('num_blankets')} | {len(schema.get('start_dates', []))} |"
        f" {schema.get('members')} | {summary.get('members')} |",
        "",
        "## Timings",
        "",
    ]
    if seconds:
        lines += [
            f"- sampling time: {sum(seconds):.1f} s in all; per member mean"
            f" {statistics.fmean(seconds):.2f} s, min {min(seconds):.2f} s, max {max(seconds):.2f} s",
        ]
    lines += [
        f"- devices: {', '.join(devices) or '-'}; hosts: {', '.join(hosts) or '-'}",
        *([f"- SLURM jobs: {', '.join(batch_jobs)}"] if batch_jobs else []),
        f"- started {attrs.get('start_time')}, aggregated {summary.get('end_time')}",
        "",
        "## Values",
        "",
        f"- mean {_rounded(summary.get('mean'))}, std {_rounded(summary.get('std'))},"
        f" min {_rounded(summary.get('min'))}, max {_rounded(summary.get('max'))}",
        f"- members with non-finite values: {', '.join(summary.get('non_finite') or []) or 'none'}",
        "",
        "## Store",
        "",
        f"`{store}`",
        "",
        "```python",
        "import xarray as xr",
        f'ds = xr.open_zarr("{store}", group="{group}")',
        "```",
    ]
    return "\n".join(lines) + "\n"


@task(name="aggregate-size", task_run_name="aggregate-{size}", cache_policy=NO_CACHE)
def aggregate_size(run_dir: str, size: int | str) -> dict[str, Any]:
    """Aggregate one trajectory size (72 or "72h") and create its artifacts; return the summary."""
    from priorflow.store import aggregate, read_marks, read_store_attrs, store_path

    logger = get_run_logger()
    summary = aggregate(run_dir, size)
    group = summary["group"]
    store = store_path(run_dir).resolve()
    attrs = read_store_attrs(store)
    run_id = str(attrs.get("run_id"))
    rows = member_rows(read_marks(run_dir, group))
    keys = artifact_keys(run_id, group)
    create_table_artifact(
        rows, key=keys["members"], description=f"priorflow {run_id} {group}: members"
    )
    create_markdown_artifact(
        report_markdown(attrs, group, summary, rows, store),
        key=keys["report"],
        description=f"priorflow {run_id} {group}: run report",
    )
    create_link_artifact(
        store.as_uri(),
        link_text=str(store),
        key=keys["store"],
        description=f"priorflow {run_id}: the zarr store (group {group})",
    )
    state = "unchanged" if summary.get("unchanged") else "aggregated"
    logger.info(
        f"{group}: {state}, {summary['members']} members, mean {_rounded(summary['mean'])},"
        f" std {_rounded(summary['std'])}; store {store}"
    )
    return summary
