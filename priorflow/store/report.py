"""A trajectory size described for people: the member table and the run report (markdown).

What the aggregation task publishes as artifacts, made here so that it can be read, tested and
reused without Prefect.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

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
                "mean": rounded(mark.get("mean")),
                "std": rounded(mark.get("std")),
                "finite": mark.get("finite"),
            }
        )
    return rows


def _job_order(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


def rounded(value: Any, digits: int = 5) -> Any:
    return float(f"{value:.{digits}g}") if isinstance(value, int | float) else value


def report_markdown(
    attrs: dict[str, Any], group: str, summary: dict[str, Any], rows: list[dict], store: Path
) -> str:
    """The run report of one size as markdown."""
    schema = attrs.get("priorflow_schema", {})
    info = schema.get("groups", {}).get(group, {})
    seconds = [r["seconds"] for r in rows if isinstance(r["seconds"], int | float)]
    diffusion = attrs.get("diffusion") or {}
    sampler = diffusion.get("sampler") or {}
    config = ", ".join(f"{k}={v}" for k, v in (sampler.get("config") or {}).items())
    card = attrs.get("card") or {}
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
        f"| sampler | {sampler.get('type')} ({config or 'defaults'}),"
        f" {diffusion.get('num_steps')} steps |",
        f"| precision | {attrs.get('precision')} |",
        f"| blankets | K={card.get('blanket_size')}, overlap {attrs.get('blanket_overlap')},"
        f" fold {attrs.get('fold_mode')} |",
        f"| run seed | {attrs.get('seed')} |",
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
        f"- mean {rounded(summary.get('mean'))}, std {rounded(summary.get('std'))},"
        f" min {rounded(summary.get('min'))}, max {rounded(summary.get('max'))}",
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
