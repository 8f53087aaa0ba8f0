"""The generation task: members of one size (``members_per_task``, default one) written into the run's store.

``generate_members(jobs, run_dir, label)`` runs on a Dask worker and calls
:func:`priorflow.run.execute.run_jobs` (skip the done members; sample the others as one batch,
each with its own seed; write and mark each), reporting the sampler's steps to a Prefect progress artifact (at most
every 2 s). It returns a small record (no tensors); ``slurm_job_id`` (None outside SLURM) and
``gpu_ids`` (the ``CUDA_VISIBLE_DEVICES`` the job saw) say where it ran; the done mark records
them too, with the Dask worker's name.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from priorflow.errors import PriorflowError
from priorflow.plan import Job
from priorflow.run.execute import run_jobs
from priorflow.store import is_done
from tasks.keys import artifact_key

PROGRESS_EVERY = 2.0  # seconds between two progress-artifact updates


def worker_name() -> str | None:
    """``name@address`` of the Dask worker running this task, or None outside one."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return f"{worker.name}@{worker.address}"


class ProgressReporter:
    """``progress(step, steps)`` -> a Prefect progress artifact, updated at most every
    ``every`` seconds (and at the last step).

    Each update is an API call (0.075-0.2 s measured): throttled by percent, a short job spent
    a fifth of its time reporting; by time, a job reports a few times whatever its length.
    """

    def __init__(
        self,
        key: str,
        description: str,
        every: float = PROGRESS_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.clock = clock
        self.shown_at = clock()
        self.artifact_id = create_progress_artifact(0.0, key=key, description=description)

    def __call__(self, step: int, steps: int) -> None:
        now = self.clock()
        if step >= steps or now - self.shown_at >= self.every:
            update_progress_artifact(self.artifact_id, min(100.0 * step / max(steps, 1), 100.0))
            self.shown_at = now


def _retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retries exceptions inside the task, but not a user error (it would fail again)."""
    try:
        state.result()
    except PriorflowError:
        return False
    except BaseException:
        return True
    return True


@task(
    name="generate-members",
    task_run_name="{label}",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_retry_unless_user_error,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def generate_members(jobs: list[Job], run_dir: str, label: str) -> list[dict[str, Any]]:
    """Generate members of one size, sampled together (see the module docstring); one small
    record each. ``label`` names the task run: the job's name, or the first one's ``+N``."""
    logger = get_run_logger()
    progress = None
    if not all(is_done(run_dir, job) for job in jobs):
        run_id = Path(run_dir).name
        progress = ProgressReporter(
            key=artifact_key("priorflow", run_id, jobs[0].name, "progress"),
            description=f"{label}: sampler steps done",
        )
    results = run_jobs(
        jobs, run_dir, progress=progress, log=logger.info, record={"worker": worker_name()}
    )
    for result in results:
        result["host"] = result.get("host") or socket.gethostname()
    return results
