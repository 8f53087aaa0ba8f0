"""How the jobs of a run share the workers: the local worker layout and each job's Dask resources.

On the local backend a ``LocalCluster`` gets one single-threaded worker *process* per group of
``gpus_per_job`` CUDA GPUs (``n_workers = n_gpus // gpus_per_job``), each seeing only its own GPUs
(``CUDA_VISIBLE_DEVICES``) and advertising the Dask resource ``{"GPU": gpus_per_job}``. On a
CPU-only machine: one worker with ``{"GPU": 1}``; there the "GPU" is a *slot*, not a device: it
makes each job hold the whole worker, so one job runs at a time, as on a GPU.
"""

from __future__ import annotations

from priorflow.errors import ConfigError


def local_worker_layout(gpus_per_job: int, n_gpus: int) -> tuple[int, int, list[str] | None]:
    """``(n_workers, gpu slots per worker, CUDA_VISIBLE_DEVICES per worker or None)``.

    With ``n_gpus == 0`` (CPU-only): one worker with one slot and no device pinning.
    """
    if n_gpus == 0:
        return 1, 1, None
    gpus_per_job = max(1, gpus_per_job)
    if gpus_per_job > n_gpus:
        raise ConfigError(
            f"hardware.gen.gpus: a job needs {gpus_per_job} GPUs but this machine has {n_gpus};"
            f" use at most {n_gpus} (or gpus: auto with more blankets_per_gpu)"
        )
    n_workers = n_gpus // gpus_per_job
    groups = [
        ",".join(str(i) for i in range(w * gpus_per_job, (w + 1) * gpus_per_job))
        for w in range(n_workers)
    ]
    return n_workers, gpus_per_job, groups


def job_resources(gpus: int, backend: str, n_gpus: int) -> dict[str, int]:
    """The Dask resources one job asks for: ``{"GPU": gpus}``, or the single slot on a
    CPU-only local machine (``n_gpus == 0``)."""
    if backend == "local" and n_gpus == 0:
        return {"GPU": 1}
    return {"GPU": max(1, int(gpus))}
