"""Batch-scheduler clusters of Dask workers (dask-jobqueue) from the run config's ``hardware``.

One worker = one batch job sized for ONE generation job (``hardware.gen``: ``cpus``, ``ram``,
``time``, ``partition``, GPUs) and running one task at a time: the Dask worker has a single thread
(``cores=1``) while the batch job books ``cpus`` cores (SLURM ``--cpus-per-task``, PBS ``ncpus``,
LSF ``-n``) for torch to use. ``N = gpus_per_job`` GPUs are asked with ``--gres=gpu:N`` (SLURM),
``ngpus=N`` (PBS select) or ``-gpu "num=N"`` (LSF), and only when ``N > 0``.

Dask resources (the contract with the flow): every worker advertises ``GPU = max(1, N)``
(:func:`worker_resources`) and the flow submits a job under ``dask.annotate(resources={"GPU":
max(1, job.gpus)})`` (:func:`priorflow.run.local.job_resources`). With ``N == 0`` (CPU-only jobs) the "GPU"
is a slot, not a device, exactly as on the local backend on a CPU-only machine: a job holds a
whole worker. ``gpus_per_job`` is the largest ``job.gpus`` of the run (one job template per
cluster), so every job fits every worker.

Files of the cluster live in the run directory: ``<run_dir>/cluster/logs`` (the batch jobs'
stdout/stderr, ``<job name>-<job id>.out``) and ``<run_dir>/cluster/scratch`` (workers' local
directory) unless ``local_directory`` says otherwise. The job script's prologue exports the
environment the workers need (``PREFECT_API_URL`` and the rest of :func:`forwarded_env`), so that
task logs reach the Prefect server even where the batch system does not pass the submitter's
environment on.

Scale with ``cluster.scale(jobs=worker_count(...))`` rather than adaptive scaling (which races
the submission of the tasks). Inside a worker, :func:`slurm_job_id` and :func:`gpu_ids_from_env`
say where a task ran (the member table records them).

This module imports no Prefect and no dask-jobqueue: it only describes the cluster; the flows
build it (:mod:`flows.jobqueue`).
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, Literal

from priorflow.config import Hardware, slurm_time_seconds
from priorflow.errors import ConfigError
from priorflow.run.environment import ENV_NAME

__all__ = [
    "CLUSTER_DIR",
    "JOBQUEUE_CLASSES",
    "cluster_paths",
    "jobqueue_spec",
    "pbs_memory",
    "worker_count",
    "worker_resources",
]

#: ``hardware.backend`` -> the dask-jobqueue cluster class (``DaskTaskRunner(cluster_class=...)``).
JOBQUEUE_CLASSES: dict[str, str] = {
    "slurm": "dask_jobqueue.SLURMCluster",
    "pbs": "dask_jobqueue.PBSCluster",
    "lsf": "dask_jobqueue.LSFCluster",
}

#: The cluster's folder inside the run directory: ``logs/`` and ``scratch/``.
CLUSTER_DIR = "cluster"


def cluster_paths(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """``{"logs": <run_dir>/cluster/logs, "scratch": <run_dir>/cluster/scratch}`` (absolute)."""
    base = Path(run_dir).expanduser().absolute() / CLUSTER_DIR
    return {"logs": base / "logs", "scratch": base / "scratch"}


def worker_resources(gpus_per_job: int) -> dict[str, int]:
    """The Dask resources a worker advertises: ``{"GPU": max(1, gpus_per_job)}``.

    ``gpus_per_job == 0`` gives one slot, so that ``{"GPU": 1}`` annotations (CPU-only jobs)
    still find a worker and each worker runs one job at a time.
    """
    if isinstance(gpus_per_job, bool) or not isinstance(gpus_per_job, int) or gpus_per_job < 0:
        raise ValueError(f"gpus_per_job must be a whole number >= 0, not {gpus_per_job!r}")
    return {"GPU": max(1, gpus_per_job)}


def _export_lines(env: Mapping[str, str]) -> list[str]:
    lines = []
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise ConfigError(
                f"job environment: {key!r} is not a variable name — use letters, digits and _"
            )
        lines.append(f"export {key}={shlex.quote(str(value))}")
    return lines


def pbs_memory(nbytes: int) -> str:
    """PBS memory, rounded up: PBS reads ``kb``/``MB``/``GB`` as powers of 1024."""
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if nbytes >= 10 * size:
            return f"{math.ceil(nbytes / size)}{unit}"
    return f"{nbytes}B"


def _hms(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def _lsf_walltime(seconds: int) -> str:
    """LSF ``-W [hour:]minute``, rounded up to the minute."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _option(hardware: Hardware, name: str, given: Any) -> Any:
    """``given`` if not None, else ``hardware.<name>`` when the config has that field."""
    return given if given is not None else getattr(hardware, name, None)


def jobqueue_spec(
    hardware: Hardware,
    run_dir: str | os.PathLike[str],
    gpus_per_job: int,
    env: Mapping[str, str] | None = None,
    *,
    kind: Literal["gen", "aggregate"] = "gen",
    host: str | None = None,
    interface: str | None = None,
    prologue: Sequence[str] | None = None,
    job_directives_skip: Sequence[str] | None = None,
    local_directory: str | os.PathLike[str] | None = None,
    python: str | None = None,
    job_name: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The dask-jobqueue cluster class and its keyword arguments for ``hardware.backend``.

    Use as ``DaskTaskRunner(cluster_class=cls, cluster_kwargs=kwargs)`` or
    :func:`make_cluster`. The kwargs hold only plain values (str, int, list, dict).

    Arguments:
        hardware: the config's ``hardware`` (backend ``slurm``, ``pbs`` or ``lsf``).
        run_dir: the run directory; the job logs and worker scratch go under ``cluster/``.
        gpus_per_job: GPUs per worker job, ``N >= 0`` (the largest ``job.gpus`` of the plan).
        env: exported in the job script's prologue (e.g. :func:`forwarded_env` with
            ``PREFECT_API_URL``).
        kind: which resources: ``hardware.gen`` (generation) or ``hardware.aggregate``.
        host: the scheduler's listening address (``"127.0.0.1"`` in tests); it must be
            reachable from the compute nodes. Default: ``hardware.scheduler_host`` if the config
            has it, else dask's (``jobqueue.yaml``, else this machine's external address).
        interface: network interface of scheduler and workers (``ib0``, ``lo``); default
            ``hardware.interface`` if the config has it.
        prologue: shell lines run before the worker starts (``module load ...``), before the
            exports; default ``hardware.job_prologue`` if the config has it.
        job_directives_skip: header lines containing any of these strings are dropped; default
            ``hardware.job_directives_skip`` if the config has it.
        local_directory: the workers' scratch folder (e.g. ``$TMPDIR`` on node-local disk);
            default ``hardware.local_directory`` if set, else ``<run_dir>/cluster/scratch``.
        python: the Python on the compute nodes; default this interpreter (``sys.executable``).
        job_name: the batch job name; default ``pf-<run_dir name>``.

    Returns:
        ``(class path, kwargs)``, e.g. ``("dask_jobqueue.SLURMCluster", {...})``.

    Raises:
        ConfigError: a backend without a batch scheduler, a bad environment variable name.
    """
    backend = hardware.backend
    if backend not in JOBQUEUE_CLASSES:
        raise ConfigError(
            f"hardware.backend: {backend!r} has no batch scheduler — jobqueue clusters are"
            f" {', '.join(JOBQUEUE_CLASSES)}"
        )
    gpus = int(gpus_per_job)
    slots = worker_resources(gpus)["GPU"]
    if hardware.gpus_per_node is not None and gpus > hardware.gpus_per_node:
        raise ConfigError(
            f"hardware.{kind}.gpus: {gpus} — more than hardware.gpus_per_node"
            f" ({hardware.gpus_per_node}); a job runs on one node"
        )
    resources = getattr(hardware, kind)
    seconds = slurm_time_seconds(resources.time)
    paths = cluster_paths(run_dir)
    host = _option(hardware, "scheduler_host", host)
    interface = _option(hardware, "interface", interface)
    prologue = _option(hardware, "job_prologue", prologue) or []
    local_directory = _option(hardware, "local_directory", local_directory)
    python = _option(hardware, "python", python)
    job_directives_skip = _option(hardware, "job_directives_skip", job_directives_skip) or []
    if isinstance(prologue, str):
        prologue = prologue.splitlines()

    kwargs: dict[str, Any] = {
        "cores": 1,  # one Dask thread: one task (one job) at a time per worker
        "processes": 1,
        "memory": resources.ram,
        "job_name": job_name or f"pf-{Path(run_dir).name}",
        "log_directory": str(paths["logs"]),
        "local_directory": str(local_directory or paths["scratch"]),
        "worker_extra_args": ["--resources", f"GPU={slots}"],
        "job_script_prologue": [*prologue, *_export_lines(env or {})],
        "job_directives_skip": list(job_directives_skip),
        "scheduler_options": {"dashboard_address": hardware.dashboard_address},
    }
    if host:
        kwargs["scheduler_options"]["host"] = host
    if interface:
        kwargs["interface"] = interface
    if python:
        kwargs["python"] = python

    if backend == "slurm":
        kwargs |= {
            "job_cpu": resources.cpus,
            "walltime": resources.time,
            "queue": resources.partition,
            "account": hardware.account,
            "job_extra_directives": [f"--gres=gpu:{gpus}"] if gpus > 0 else [],
        }
    elif backend == "pbs":
        from dask.utils import parse_bytes

        select = f"select=1:ncpus={resources.cpus}"
        select += f":mem={pbs_memory(parse_bytes(resources.ram))}"
        if gpus > 0:
            select += f":ngpus={gpus}"
        kwargs |= {
            "resource_spec": select,
            "walltime": _hms(seconds),
            "queue": resources.partition,
            "account": hardware.account,
            "job_extra_directives": [],
        }
    else:  # lsf
        kwargs |= {
            "ncpus": resources.cpus,
            "walltime": _lsf_walltime(seconds),
            "queue": resources.partition,
            "project": hardware.account,
            "job_extra_directives": [f'-gpu "num={gpus}"'] if gpus > 0 else [],
        }
    return JOBQUEUE_CLASSES[backend], kwargs


def worker_count(plan_jobs: int | Sized, max_workers: int | None = None) -> int:
    """How many worker jobs to start (``cluster.scale(jobs=...)``).

    A worker runs one job at a time, so as many workers as jobs can run at once:
    ``min(number of jobs, max_workers)`` (``max_workers`` None: no bound). 0 when there is
    nothing to run.

    Arguments:
        plan_jobs: the jobs to run (e.g. the plan's missing jobs) or their number.
        max_workers: ``hardware.max_workers``.
    """
    count = plan_jobs if isinstance(plan_jobs, int) else len(plan_jobs)
    if count < 0:
        raise ValueError(f"plan_jobs must be >= 0, not {count}")
    if max_workers is not None:
        if max_workers < 1:
            raise ConfigError(f"hardware.max_workers: {max_workers} — must be >= 1")
        count = min(count, max_workers)
    return count
