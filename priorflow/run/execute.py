"""One job, executed: skip it if done, else sample its trajectory, write it, mark it done.

:func:`run_job` is what a generation task calls on a worker, and what a notebook can call
directly. It is idempotent: a job with a done mark is skipped (its mark's record is returned),
so a rerun of the run, a retry or a rescheduled task never writes a member twice. The model is
loaded once per process (by path, checkpoint and device). Out-of-memory errors are handled in
one place, the core's blanket denoiser, which halves its blanket batch and retries.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from priorflow.core.devices import visible_devices
from priorflow.errors import ModelError
from priorflow.models.loading import Model, load_model
from priorflow.plan import Job
from priorflow.run.environment import (
    gpu_ids_from_env,
    pin_torch_threads,
    slurm_job_id,
    tune_allocator,
)
from priorflow.store import read_mark, write_member

_MODELS: dict[tuple[str, str, str], Model] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(path: str, target: str, device: str) -> Model:
    """``load_model(path, target, device)``, loaded once per process."""
    key = (os.path.realpath(path), target, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(path, target=target, device=device)
        return _MODELS[key]


def job_record(job: Job, mark: Mapping[str, Any], skipped: bool) -> dict[str, Any]:
    """The small record a job returns (no tensors): its identity and its mark's numbers."""
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
    run_dir: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate one member into the run's store (see the module docstring).

    Arguments:
        job: the job (its ``spec`` says how to sample).
        run_dir: the run directory (its store made by ``create_store``).
        progress: called as ``progress(step, steps)`` after each sampler step.
        log: where one line per job goes.
        record: more fields for the done mark's record (e.g. the Dask worker's name).

    Returns:
        :func:`job_record` of the job's mark, ``skipped`` when it was done already.
    """
    mark = read_mark(run_dir, job)
    if mark is not None:
        log(f"{job.name}: already done, skipped")
        return job_record(job, mark, skipped=True)

    spec = job.spec
    devices = visible_devices()
    threads = pin_torch_threads(devices)
    tune_allocator()  # a Dask worker's malloc settings would double the sampling time
    model = cached_model(spec.model_path, spec.model_target, str(devices[0]))
    if spec.checkpoint_sha256 and model.checkpoint_sha256 != spec.checkpoint_sha256:
        raise ModelError(
            f"checkpoint {model.checkpoint}: its sha256 changed since the run was planned"
            f" ({str(model.checkpoint_sha256)[:12]} now, {spec.checkpoint_sha256[:12]} planned);"
            " restore it or start a new run_id"
        )
    trajectory = spec.sample(
        model, job.size, job.start, job.seed, devices=devices, progress=progress
    )
    details = dict(trajectory.record)  # its blanket_batch is the one the core ended up using
    details.update(
        {
            "torch_threads": threads,
            "slurm_job_id": slurm_job_id(),
            "gpu_ids": gpu_ids_from_env(),
            **dict(record or {}),
        }
    )
    mark = write_member(run_dir, job, trajectory.latent, details)
    log(
        f"{job.name}: {details['seconds']:.1f} s on {details['device']}, "
        f"mean {mark['mean']:+.3f}, std {mark['std']:.3f}, finite {mark['finite']}"
    )
    return job_record(job, mark, skipped=False)
