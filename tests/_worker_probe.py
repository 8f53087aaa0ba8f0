"""What a Dask worker process sees (a light module: workers import it to run the probe)."""

from __future__ import annotations

import os


def worker_view(dask_worker=None) -> dict:
    """Name, resources, threads, CUDA_VISIBLE_DEVICES, PRIORFLOW_TORCH_THREADS and pid of a worker."""
    from distributed import get_worker

    worker = dask_worker or get_worker()
    return {
        "name": worker.name,
        "resources": dict(worker.state.total_resources),
        "nthreads": worker.state.nthreads,
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": os.environ.get("PRIORFLOW_TORCH_THREADS"),
        "pid": os.getpid(),
    }
