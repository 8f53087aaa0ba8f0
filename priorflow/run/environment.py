"""What a job reads from its process environment: torch threads, its GPUs, its batch job.

Dask's nanny sets ``OMP_NUM_THREADS=1`` in its workers; a generation job then sets torch's
threads from ``PRIORFLOW_TORCH_THREADS`` (exported to local workers and into batch job scripts;
default 1), so a trajectory is bit for bit the same as a direct call with as many threads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import torch

from priorflow.errors import ConfigError

TORCH_THREADS_ENV = "PRIORFLOW_TORCH_THREADS"
#: Environment variables passed on to batch worker jobs (by prefix or name).
FORWARDED_ENV_PREFIXES: tuple[str, ...] = ("PREFECT_", "PRIORFLOW_", "DO_NOT_TRACK")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def torch_threads(default: int = 1, environ: Mapping[str, str] | None = None) -> int:
    """Torch intra-op threads for a job: ``$PRIORFLOW_TORCH_THREADS`` or ``default``."""
    environ = os.environ if environ is None else environ
    text = environ.get(TORCH_THREADS_ENV, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{TORCH_THREADS_ENV}: {text!r} is not a positive integer; use e.g. 1")
    return value


def pin_torch_threads(devices: Sequence[torch.device]) -> int:
    """Set torch's intra-op threads (``$PRIORFLOW_TORCH_THREADS``, else 1 on the CPU); the
    number in use."""
    on_cpu = all(device.type == "cpu" for device in devices)
    if os.environ.get(TORCH_THREADS_ENV) or on_cpu:
        torch.set_num_threads(torch_threads(default=1))
    return torch.get_num_threads()


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default ``os.environ``) the worker jobs need, sorted:
    ``PREFECT_*`` (API URL, home, result storage, logging), ``PRIORFLOW_*`` and ``DO_NOT_TRACK``."""
    environ = os.environ if environ is None else environ
    return {
        key: environ[key]
        for key in sorted(environ)
        if key.startswith(FORWARDED_ENV_PREFIXES) and ENV_NAME.match(key)
    }


def _split_ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip() not in ("", "NoDevFiles")]


def gpu_ids_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPU ids this process was given, as strings (``["0", "1"]``; ``[]`` for none).

    ``CUDA_VISIBLE_DEVICES`` (what CUDA and torch use; set by SLURM for ``--gres=gpu`` and by
    the local backend) when set, even empty; else ``SLURM_JOB_GPUS``/``SLURM_STEP_GPUS``; else
    none. Ids may be UUIDs (``GPU-...``, ``MIG-...``) on some clusters.
    """
    environ = os.environ if environ is None else environ
    for key in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        if key in environ:
            return _split_ids(environ[key])
    return []


def slurm_job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The SLURM job this process runs in (``SLURM_JOB_ID``), or None outside SLURM."""
    environ = os.environ if environ is None else environ
    return environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID") or None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_allocator() -> bool:
    r"""Keep the sampler's tensors on the heap in this process (glibc ``mallopt``).

    A Dask worker starts with ``MALLOC_TRIM_THRESHOLD_=65536`` (Dask's nanny sets it): glibc then
    stops adapting its mmap threshold, so every tensor over 128 kB is ``mmap``-ed and unmapped
    on each use, and the heap is trimmed after every free: a sampling run in a worker took about
    twice as long as the same call outside (page faults). Raising the mmap threshold to 64 MiB
    and the trim threshold to 256 MiB at run time restores reuse, whatever the environment the
    worker was started with (local, an existing scheduler's, a batch job's). Returns whether it
    was applied (glibc only). ``benchmarks/bench_worker.py`` measures it.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    )
