"""The prior-check flow: ``prior_check(run_dir, overrides)`` (flow ``prior-check``).

Checks a finished run (:mod:`tasks.check`): the verdict, the report with its plots and the
verdict table become artifacts of this flow run; the flow run ends Failed when the verdict is
fail, with the reasons one per line in its message. The nightly deployment checks inside the
generation flow instead (``generate_priors(..., check=True)``); this flow checks a run made
earlier, as ``priorflow check RUN`` does from the command line.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.check import check_priors

FLOW_NAME = "prior-check"


@flow(name=FLOW_NAME, persist_result=False)
def prior_check(
    run_dir: str, overrides: list[str] | None = None, archive: str | None = None
) -> dict[str, Any]:
    """Check the priors of a finished run.

    Arguments:
        run_dir: ``<output_dir>/<run_id>`` holding ``prior.zarr``.
        overrides: ``check.key=value`` items over the run's own ``check:`` section (e.g.
            ``["check.max_bias=0.3"]``).
        archive: the latent archive (default: the run's).

    Returns:
        The check's record (verdict, reasons, key numbers, paths).
    """
    from priorflow.evaluation.check import load_check_config

    thresholds = load_check_config(run_dir, overrides or ())
    return check_priors(run_dir, thresholds.model_dump(), archive)
