"""The prior-check flow: ``prior_check(run_dir, overrides)`` (flow ``prior-check``).

Checks a finished run (:mod:`tasks.check`): the verdict, the report with its plots and the
verdict table become artifacts of this flow run; the flow run ends Failed when the verdict is
fail, with the reasons one per line in its message. The nightly deployment checks inside the
generation flow instead (``generate_priors(..., check=True)``); this flow checks a run made
earlier, as ``priorflow check RUN`` does from the command line; without ``run_dir``, the newest
finished run under ``output_dir`` (``runs``, where the shipped configs write).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks.check import check_priors

FLOW_NAME = "prior-check"


@flow(name=FLOW_NAME, persist_result=False)
def prior_check(
    run_dir: str | None = None,
    overrides: list[str] | None = None,
    archive: str | None = None,
    output_dir: str = "runs",
) -> dict[str, Any]:
    """Check the priors of a finished run.

    Arguments:
        run_dir: ``<output_dir>/<run_id>`` holding ``prior.zarr``; default: the newest finished
            run under ``output_dir`` (:func:`priorflow.run.finished.newest_finished_run`).
        overrides: ``check.key=value`` items over the run's own ``check:`` section (e.g.
            ``["check.max_bias=0.3"]``).
        archive: the latent archive (default: the run's).
        output_dir: where to look for the newest run when ``run_dir`` is not given (relative to
            the working directory: the repository for the deployments); default ``runs``.

    Returns:
        The check's record (verdict, reasons, key numbers, paths: ``directory`` the check's
        folder ``<run_dir>/check/<UTC time>``, ``report`` and ``metrics`` inside it).
    """
    from priorflow.evaluation.check import load_check_config
    from priorflow.run.finished import newest_finished_run

    if not run_dir:
        run_dir = str(newest_finished_run(output_dir))
        get_run_logger().info(f"no run_dir given: checking the newest finished run, {run_dir}")
    thresholds = load_check_config(run_dir, overrides or ())
    return check_priors(run_dir, thresholds.model_dump(), archive)
