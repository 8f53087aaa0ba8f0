"""The aggregation task: verify and summarise one trajectory size, and publish the run's artifacts.

``aggregate_size(run_dir, size)`` calls :func:`priorflow.store.aggregate` (every done mark
checked against its data, per-member summaries, consolidated metadata; nothing is written when
the marks have not changed) and creates three artifacts, keyed per run and size so that the UI
lists them (``priorflow-<run_id>-<group>-members`` / ``-report`` / ``-store``):

- a table of members: size, date, member, seed, seconds, device, worker host, SLURM job id and
  GPU ids the job saw, mean, std, finite;
- a markdown report: config summary, plan, timings, where the store is and how to open it;
- a link to the store, its description giving the path as text (a browser does not open a
  ``file://`` link from the UI) and the line that opens it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from priorflow.store import aggregate, read_marks, read_store_attrs, store_path
from priorflow.store.report import member_rows, report_markdown, rounded
from tasks.keys import artifact_key


def artifact_keys(run_id: str, group: str) -> dict[str, str]:
    """The keys of one size's artifacts: ``members``, ``report``, ``store``."""
    return {
        kind: artifact_key("priorflow", run_id, group, kind)
        for kind in ("members", "report", "store")
    }


def store_description(run_id: str, group: str, store: Path) -> str:
    """The store link's description (markdown): the path as text and how to open the group."""
    return (
        f"priorflow {run_id}: the zarr store (group {group}) at `{store}` — open it with"
        f' `xarray.open_zarr("{store}", group="{group}")`'
    )


@task(name="aggregate-size", task_run_name="aggregate-{size}", cache_policy=NO_CACHE)
def aggregate_size(run_dir: str, size: int | str) -> dict[str, Any]:
    """Aggregate one trajectory size (72 or "72h") and create its artifacts; return the summary."""
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
        description=store_description(run_id, group, store),
    )
    state = "unchanged" if summary.get("unchanged") else "aggregated"
    logger.info(
        f"{group}: {state}, {summary['members']} members, mean {rounded(summary['mean'])},"
        f" std {rounded(summary['std'])}; store {store}"
    )
    return summary
