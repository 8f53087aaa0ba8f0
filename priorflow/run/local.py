"""How the jobs of a run share the workers: the local worker layout and each job's Dask resources.

The local backend runs a ``LocalCluster`` of worker *processes*, each running one task at a time
with ``threads`` torch threads (:func:`local_layout`). The rule, on a machine with ``C`` cores
(those this process may use) and ``M`` bytes of memory:

- threads per worker ``t``: ``$PRIORFLOW_TORCH_THREADS`` when set (it always wins: the tests pin
  it to 1 for bit-for-bit results), else ``hardware.gen.cpus``, at most ``C``;
- workers, on a CPU-only machine: ``C // t`` (so ``workers x t <= C``); with CUDA GPUs: one per
  group of ``gpus_per_job`` GPUs (``n_gpus // gpus_per_job``), each seeing only its own GPUs
  (``CUDA_VISIBLE_DEVICES``), and ``t`` at most ``C // workers``;
- then at most ``M // hardware.gen.ram`` workers (each gets at least the ``ram`` a job asks
  for), at most ``hardware.max_workers``, at most the number of tasks to run, and at least 1.

Each worker advertises the Dask resource ``{"GPU": gpus_per_job}``; on a CPU-only machine
``{"GPU": 1}``, a *slot*, not a device: it makes each job hold a whole worker, as on a GPU.
``hardware.gen.partition`` and ``time`` mean nothing here (no scheduler, no walltime).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from priorflow.errors import ConfigError
from priorflow.run.environment import TORCH_THREADS_ENV, torch_threads


def machine_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, or None when it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class LocalLayout:
    """The local workers: how many, torch threads in each, their ``GPU`` slots and devices.

    ``cores`` and ``memory`` are what the machine has; ``threads_from`` says where ``threads``
    came from (``PRIORFLOW_TORCH_THREADS`` or ``hardware.gen.cpus``); ``bound`` what limited
    the number of workers.
    """

    workers: int
    threads: int
    slots: int
    visible_devices: list[str] | None
    cores: int
    memory: int | None
    threads_from: str
    bound: str

    def describe(self) -> str:
        """``2 workers x 1 torch thread (this machine: 2 cores, 23.4 GiB; bound: cores)``."""
        memory = f", {self.memory / 2**30:.1f} GiB" if self.memory else ""
        return (
            f"{self.workers} worker{'s' if self.workers != 1 else ''} x {self.threads} torch"
            f" thread{'s' if self.threads != 1 else ''} ({self.threads_from}; this machine:"
            f" {self.cores} cores{memory}; workers bound by {self.bound})"
        )


def local_layout(
    gpus_per_job: int,
    n_gpus: int,
    *,
    cpus: int = 1,
    ram: int | None = None,
    tasks: int | None = None,
    max_workers: int | None = None,
    cores: int | None = None,
    memory: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> LocalLayout:
    """The layout of the module docstring's rule.

    Arguments:
        gpus_per_job: GPUs one job holds (the largest over the run's jobs).
        n_gpus: CUDA GPUs on this machine (0: CPU-only).
        cpus: ``hardware.gen.cpus``.
        ram: ``hardware.gen.ram`` in bytes (None: no memory bound).
        tasks: tasks to run (None: no bound).
        max_workers: ``hardware.max_workers``.
        cores, memory: the machine's (default: :func:`machine_cores`, :func:`machine_memory`).
        environ: where ``PRIORFLOW_TORCH_THREADS`` is read (default ``os.environ``).
    """
    cores = machine_cores() if cores is None else max(1, cores)
    memory = machine_memory() if memory is None else memory
    environ = os.environ if environ is None else environ
    pinned = bool(environ.get(TORCH_THREADS_ENV, "").strip())
    if n_gpus == 0:
        slots, groups = 1, None
        threads = torch_threads(default=min(cpus, cores), environ=environ)
        bounds = {"cores": max(1, cores // threads)}
    else:
        count, slots, groups = local_worker_layout(gpus_per_job, n_gpus)
        bounds = {"GPUs": count}
        threads = 0  # set below, from the workers
    if ram and memory:
        bounds["ram"] = max(1, memory // ram)
    if max_workers is not None:
        bounds["max_workers"] = max_workers
    if tasks is not None:
        bounds["tasks"] = max(1, tasks)
    bound = min(bounds, key=lambda key: bounds[key])
    workers = max(1, bounds[bound])
    if groups is not None:
        groups = groups[:workers]
        threads = torch_threads(default=max(1, min(cpus, cores // workers)), environ=environ)
    source = TORCH_THREADS_ENV if pinned else "hardware.gen.cpus"
    return LocalLayout(workers, threads, slots, groups, cores, memory, source, bound)


def local_worker_layout(gpus_per_job: int, n_gpus: int) -> tuple[int, int, list[str] | None]:
    """``(n_workers, gpu slots per worker, CUDA_VISIBLE_DEVICES per worker or None)`` from the
    GPUs alone (:func:`local_layout` bounds it further).

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
