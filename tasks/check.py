"""The prior-check task: judge a finished run and publish the verdict as artifacts.

``check_priors(run_dir, thresholds, archive)`` calls :func:`priorflow.evaluation.check.run_check` (metrics
against the archive, climatology and persistence; a new folder ``<run_dir>/check/<UTC time>/``
with the metrics store, report and PNGs, ``<run_dir>/check/latest`` pointing at it; earlier
checks are kept) and creates two artifacts keyed by the run, a new version of each per check
(the UI keeps the earlier ones), their descriptions naming the check's folder:

- ``priorflow-<run_id>-check-report``: the markdown report of this check (``result.report``),
  its PNG plots embedded (data URIs), so the Prefect UI shows them;
- ``priorflow-<run_id>-check-verdict``: a table, one row per judged criterion and size.

A failed verdict raises :class:`priorflow.evaluation.check.CheckError` (the reasons, one per line), so the
task run and the flow run that waits on it end Failed (red in the UI); a user error (no store,
unfinished run, bad thresholds) is not retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.keys import artifact_key


def check_artifact_keys(run_id: str) -> dict[str, str]:
    """The keys of a run's check artifacts: ``report`` and ``verdict``."""
    return {
        kind: artifact_key("priorflow", run_id, "check", kind) for kind in ("report", "verdict")
    }


def verdict_rows(result: Any) -> list[dict[str, Any]]:
    """One table row per finding: size, criterion, worst value, allowed, status, message."""
    rows = []
    for finding in result.findings:
        value = finding.value
        rows.append(
            {
                "size": finding.group,
                "criterion": finding.criterion,
                "worst value": None if value is None else float(f"{value:.4g}"),
                "allowed": finding.limit,
                "status": "pass" if finding.ok else "FAIL",
                "message": finding.message,
            }
        )
    return rows


@task(name="check-priors", task_run_name="check-priors", cache_policy=NO_CACHE)
def check_priors(
    run_dir: str,
    thresholds: dict[str, Any] | None = None,
    archive: str | None = None,
) -> dict[str, Any]:
    """Check a finished run (see the module docstring); return the small result record.

    Arguments:
        run_dir: the run directory (``prior.zarr`` with every size aggregated).
        thresholds: a ``check:`` mapping (None: the run's own, from ``config.yaml``).
        archive: the latent archive (None: the run's).
    """
    from priorflow.evaluation.check import run_check

    logger = get_run_logger()
    result = run_check(run_dir, thresholds, archive, progress=logger.info)
    run_id = Path(run_dir).name
    keys = check_artifact_keys(run_id)
    create_markdown_artifact(
        result.report.read_text(),
        key=keys["report"],
        description=f"priorflow {run_id}: prior check report ({result.verdict}), "
        f"{result.directory}",
    )
    create_table_artifact(
        verdict_rows(result),
        key=keys["verdict"],
        description=f"priorflow {run_id}: prior check verdict ({result.verdict}), "
        f"{result.directory}",
    )
    if result.passed:
        logger.info(f"prior check PASS ({len(result.findings)} criteria); report {result.report}")
    else:
        for reason in result.reasons:
            logger.error(reason)
        logger.error(f"prior check FAIL; report {result.report}")
    result.raise_for_verdict()
    return result.to_dict()
