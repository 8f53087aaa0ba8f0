"""The generation task: one job = one trajectory written into the run's store.

``generate_member(job, run_dir, settings)`` runs on a Dask worker. It is idempotent: a job with
a done mark is skipped (its mark's record is returned), so a rerun of the flow, a Prefect retry
or Dask rescheduling after a lost worker never writes a member twice. Otherwise it

1. pins torch's threads (``PRIORFLOW_TORCH_THREADS``, see :mod:`flows.runners`);
2. loads the model once per worker process (cached by path, checkpoint and device);
3. calls :func:`priorflow.core.generate.generate_trajectory` with the job's seed, reporting the
   sampler's steps to a Prefect progress artifact (every 5 %);
4. on a CUDA out-of-memory error that escapes the core (the blanket denoiser already halves its
   batch within a call), samples the trajectory again with half the blanket batch (down to 1);
5. writes the member with :func:`priorflow.store.write_member` (region, flush, then done mark);

and returns a small record (no tensors): ``name, group, size, date, member, seed, seconds,
device, host, worker, mean, std, finite, blanket_batch, torch_threads, slurm_job_id,
gpu_ids, skipped``. ``slurm_job_id`` (None outside SLURM) and ``gpu_ids`` (the
``CUDA_VISIBLE_DEVICES`` the job saw) say where it ran; the done mark records them too.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.runners import TORCH_THREADS_ENV
from priorflow.run.cluster import gpu_ids_from_env, slurm_job_id
from priorflow.errors import PriorflowError
from priorflow.plan import Job, RunPlan, generation_kwargs
from tasks.keys import artifact_key

PROGRESS_EVERY = 5.0  # percent between two progress-artifact updates


@dataclass(frozen=True)
class GenerationSettings:
    """What every job of a run shares (small, picklable; from :class:`priorflow.plan.RunPlan`)."""

    run_id: str
    model_path: str
    model_target: str
    overlap: int
    sampler: str
    sampler_config: dict[str, Any]
    steps: int
    fold: str
    precision: str
    blanket_batch: int | None

    @classmethod
    def from_plan(cls, plan: RunPlan) -> GenerationSettings:
        return cls(
            run_id=plan.run_id,
            model_path=str(plan.model_path),
            model_target=plan.model_target,
            overlap=plan.overlap,
            sampler=plan.sampler,
            sampler_config=dict(plan.sampler_config),
            steps=plan.steps,
            fold=plan.fold,
            precision=plan.precision,
            blanket_batch=plan.blanket_batch,
        )

    def generate_kwargs(self, job: Job) -> dict[str, Any]:
        """Keyword arguments of ``generate_trajectory(model, **kwargs)`` for ``job``."""
        return generation_kwargs(job, self)


# ---------------------------------------------------------------------------------------------
# Worker-process state


_MODELS: dict[tuple[str, str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(path: str, target: str, device: str) -> Any:
    """``load_model(path, target, device)``, loaded once per worker process."""
    from priorflow.models.loading import load_model

    key = (os.path.realpath(path), target, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(path, target=target, device=device)
        return _MODELS[key]


def job_devices(gpus: int) -> list[str]:
    """The devices of a job: every visible CUDA device, or the CPU.

    A worker sees exactly the GPUs of its job: ``CUDA_VISIBLE_DEVICES`` is set per worker by the
    local backend and by the batch system (SLURM ``--gres=gpu:N``), so the job's blankets are
    spread over all of them by the core's multi-device blanket denoiser (``gpus`` is what the
    job asked for; the environment decides).
    """
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def pin_torch_threads(devices: list[str]) -> int:
    """Set torch's intra-op threads: ``$PRIORFLOW_TORCH_THREADS``, else 1 on the CPU."""
    import torch

    from flows.runners import torch_threads

    if os.environ.get(TORCH_THREADS_ENV) or devices == ["cpu"]:
        torch.set_num_threads(torch_threads(default=1))
    return torch.get_num_threads()


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return f"{worker.name}@{worker.address}"


def _is_cuda_oom(error: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom)


class ProgressReporter:
    """``progress(step, steps)`` -> a Prefect progress artifact, updated every few percent."""

    def __init__(self, key: str, description: str, every: float = PROGRESS_EVERY) -> None:
        self.every = every
        self.shown = 0.0
        self.artifact_id = create_progress_artifact(0.0, key=key, description=description)

    def __call__(self, step: int, steps: int) -> None:
        percent = 100.0 * step / max(steps, 1)
        if percent >= 100.0 or percent - self.shown >= self.every:
            update_progress_artifact(self.artifact_id, min(percent, 100.0))
            self.shown = percent


def _record(job: Job, mark: dict[str, Any], skipped: bool) -> dict[str, Any]:
    record = mark.get("record") or {}
    return {
        "name": job.name,
        "group": job.group,
        "size": job.size,
        "date": job.start.strftime("%Y-%m-%dT%H"),
        "member": job.member,
        "seed": job.seed,
        "seconds": record.get("seconds"),
        "device": record.get("device"),
        "host": record.get("host"),
        "worker": record.get("worker"),
        "mean": mark.get("mean"),
        "std": mark.get("std"),
        "finite": mark.get("finite"),
        "blanket_batch": record.get("blanket_batch"),
        "torch_threads": record.get("torch_threads"),
        "slurm_job_id": record.get("slurm_job_id"),
        "gpu_ids": record.get("gpu_ids"),
        "skipped": skipped,
    }


def run_job(
    job: Job,
    run_dir: str,
    settings: GenerationSettings,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The body of :func:`generate_member`, usable without Prefect (progress: any callable)."""
    from priorflow.core.blanket import BlanketPlan
    from priorflow.core.generate import generate_trajectory
    from priorflow.store import read_mark, write_member

    mark = read_mark(run_dir, job)
    if mark is not None:
        log(f"{job.name}: already done, skipped")
        return _record(job, mark, skipped=True)

    devices = job_devices(job.gpus)
    threads = pin_torch_threads(devices)
    model = cached_model(settings.model_path, settings.model_target, devices[0])
    # On GPUs: devices=None, so that the core takes every visible device (CUDA_VISIBLE_DEVICES).
    sample_on = None if devices != ["cpu"] else devices
    kwargs = settings.generate_kwargs(job)
    batch = kwargs.pop("blanket_batch")
    if batch is None:
        batch = BlanketPlan(job.size, model.blanket_size, settings.overlap).num_blankets
    while True:
        try:
            trajectory = generate_trajectory(
                model, **kwargs, blanket_batch=batch, devices=sample_on, progress=progress
            )
            break
        except Exception as error:
            if not _is_cuda_oom(error) or batch <= 1:
                raise
            import torch

            torch.cuda.empty_cache()
            batch = max(1, batch // 2)
            log(f"{job.name}: CUDA out of memory; retrying with blanket_batch={batch}")
    record = dict(trajectory.record)  # its blanket_batch is the one the core ended up using
    record.update(
        {
            "torch_threads": threads,
            "worker": _worker_name(),
            "slurm_job_id": slurm_job_id(),
            "gpu_ids": gpu_ids_from_env(),
        }
    )
    mark = write_member(run_dir, job, trajectory.latent, record)
    log(
        f"{job.name}: {record['seconds']:.1f} s on {record['device']}, "
        f"mean {mark['mean']:+.3f}, std {mark['std']:.3f}, finite {mark['finite']}"
    )
    return _record(job, mark, skipped=False)


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
    name="generate-member",
    task_run_name="{job.name}",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_retry_unless_user_error,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def generate_member(job: Job, run_dir: str, settings: GenerationSettings) -> dict[str, Any]:
    """Generate one member (see the module docstring) and return its small record."""
    logger = get_run_logger()
    from priorflow.store import is_done

    progress = None
    if not is_done(run_dir, job):
        progress = ProgressReporter(
            key=artifact_key("priorflow", settings.run_id, job.name, "progress"),
            description=f"{job.name}: sampler steps done",
        )
    record = run_job(job, run_dir, settings, progress=progress, log=logger.info)
    record["host"] = record.get("host") or socket.gethostname()
    return record
