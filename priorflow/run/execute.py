"""Jobs executed: skip the done ones, sample the others as one batch, write and mark each.

:func:`run_job` is what a generation task calls on a worker, and what a notebook can call
directly. It is idempotent: a job with a done mark is skipped (its mark's record is returned),
so a rerun of the run, a retry or a rescheduled task never writes a member twice. The model is
loaded once per process (by path, checkpoint and device). Out-of-memory errors are handled in
one place, the core's blanket denoiser, which halves its blanket batch and retries.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
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
    """Generate one member into the run's store (:func:`run_jobs` of one job)."""
    return run_jobs([job], run_dir, progress=progress, log=log, record=record)[0]


def run_jobs(
    jobs: Sequence[Job],
    run_dir: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
    record: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Generate members of one size into the run's store, sampled together as one batch.

    Members already done are skipped; the others are sampled as one batch (each from its own
    seed), then each is written and marked on its own, so resuming and retrying stay per member.

    Arguments:
        jobs: jobs of one trajectory size (their ``spec`` says how to sample).
        run_dir: the run directory (its store made by ``create_store``).
        progress: called as ``progress(step, steps)`` after each sampler step.
        log: where one line per member goes.
        record: more fields for the done marks' records (e.g. the Dask worker's name).

    Returns:
        :func:`job_record` of each job's mark, in order, ``skipped`` when it was done already.
    """
    if len({job.size for job in jobs}) > 1:
        raise ValueError("run_jobs: the jobs of one task have one trajectory size")
    marks = {job.name: read_mark(run_dir, job) for job in jobs}
    todo = [job for job in jobs if marks[job.name] is None]
    for job in jobs:
        if marks[job.name] is not None:
            log(f"{job.name}: already done, skipped")
    if todo:
        spec = todo[0].spec
        devices = visible_devices()
        threads = pin_torch_threads(devices)
        tune_allocator()  # a Dask worker's malloc settings would double the sampling time
        model = cached_model(spec.model_path, spec.model_target, str(devices[0]))
        if spec.checkpoint_sha256 and model.checkpoint_sha256 != spec.checkpoint_sha256:
            raise ModelError(
                f"checkpoint {model.checkpoint}: its sha256 changed since the run was planned"
                f" ({str(model.checkpoint_sha256)[:12]} now, {spec.checkpoint_sha256[:12]}"
                " planned); restore it or start a new run_id"
            )
        trajectories = spec.sample(
            model,
            todo[0].size,
            [job.start for job in todo],
            [job.seed for job in todo],
            devices=devices,
            progress=progress,
        )
        where = {
            "torch_threads": threads,
            "slurm_job_id": slurm_job_id(),
            "gpu_ids": gpu_ids_from_env(),
            **dict(record or {}),
        }
        for job, trajectory in zip(todo, trajectories, strict=True):
            details = dict(trajectory.record) | where  # blanket_batch: the one the core used
            marks[job.name] = write_member(run_dir, job, trajectory.latent, details)
            mark = marks[job.name]
            log(
                f"{job.name}: {details['seconds']:.1f} s on {details['device']}"
                f" (batch of {len(todo)}), mean {mark['mean']:+.3f}, std {mark['std']:.3f},"
                f" finite {mark['finite']}"
            )
    return [job_record(job, marks[job.name], skipped=job not in todo) for job in jobs]
