"""The Dask task runner of a run, built from the config's ``hardware`` section.

- ``local``: a ``LocalCluster`` on this machine, one single-threaded worker *process* per group of
  ``gpus_per_job`` CUDA GPUs (``n_workers = n_gpus // gpus_per_job``), each worker seeing only its
  own GPUs (``CUDA_VISIBLE_DEVICES``) and advertising the Dask resource ``{"GPU": gpus_per_job}``.
  On a CPU-only machine: one worker with ``{"GPU": 1}``. There the "GPU" is a *slot*, not a
  device: it makes each job hold the whole worker, so exactly one job runs at a time, as on a GPU.
- ``address``: an existing Dask scheduler (``hardware.address``); its workers must advertise the
  ``GPU`` resource (``dask worker ADDRESS --resources GPU=1``).
- ``slurm``, ``pbs``, ``lsf``: a dask-jobqueue cluster of batch jobs, one worker per job, sized
  by ``hardware.gen`` and scaled to ``min(pending jobs, hardware.max_workers)`` jobs
  (:mod:`flows.jobqueue`); its job script is recorded as an artifact of the run.

:func:`open_task_runner` gives the task runner of any backend for a block (the cluster of a
batch backend is closed when it ends); :func:`aggregation_runner` the one of
``hardware.aggregate.where: worker``.

Jobs are submitted under ``dask.annotate(resources=job_resources(...))``, so a worker runs as many
jobs at a time as it has GPU slots.

Torch threads: Dask's nanny sets ``OMP_NUM_THREADS=1`` in its workers; the generation task then
calls ``torch.set_num_threads(torch_threads())``, which reads ``PRIORFLOW_TORCH_THREADS`` (exported
here to the local workers; default 1). A trajectory is bit-for-bit the same as a direct call of
:func:`priorflow.core.generate.generate_trajectory` under the same number of threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from priorflow.errors import ConfigError

if TYPE_CHECKING:
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

TORCH_THREADS_ENV = "PRIORFLOW_TORCH_THREADS"
BACKENDS = ("local", "address", "slurm", "pbs", "lsf")
AVAILABLE_BACKENDS = BACKENDS
JOBQUEUE_BACKENDS = ("slurm", "pbs", "lsf")


def torch_threads(default: int = 1) -> int:
    """Torch intra-op threads for a generation task: ``$PRIORFLOW_TORCH_THREADS`` or ``default``."""
    text = os.environ.get(TORCH_THREADS_ENV, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{TORCH_THREADS_ENV}: {text!r} is not a positive integer; use e.g. 1")
    return value


def cuda_gpu_count() -> int:
    """Number of CUDA GPUs visible to this process (0 on a CPU-only machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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


def local_cluster(
    n_workers: int = 1,
    gpus_per_worker: int = 1,
    visible_devices: list[str] | None = None,
    torch_threads: int = 1,
    dashboard_address: str | None = ":0",
    **kwargs: Any,
) -> LocalCluster:
    """A ``LocalCluster`` of single-threaded worker processes with ``{"GPU": gpus_per_worker}``.

    Arguments:
        n_workers: worker processes.
        gpus_per_worker: the value of each worker's ``GPU`` resource.
        visible_devices: ``CUDA_VISIBLE_DEVICES`` of each worker (length ``n_workers``), or None
            to leave devices alone (CPU-only machine).
        torch_threads: exported to the workers as ``PRIORFLOW_TORCH_THREADS``.
        dashboard_address: ``":0"`` picks a free port (``None`` does not disable it).
        kwargs: more ``LocalCluster`` options.
    """
    from distributed import LocalCluster

    env = {TORCH_THREADS_ENV: str(torch_threads)}
    options = dict(
        threads_per_worker=1,
        processes=True,
        resources={"GPU": gpus_per_worker},
        dashboard_address=dashboard_address,
        env=env,
        **kwargs,
    )
    if visible_devices is None:
        return LocalCluster(n_workers=n_workers, **options)
    if len(visible_devices) != n_workers:
        raise ValueError("visible_devices needs one entry per worker")
    # One spec per worker so that each sees only its own GPUs.
    cluster = LocalCluster(n_workers=0, **options)
    try:
        template = cluster.new_spec
        for index, devices in enumerate(visible_devices):
            worker_options = dict(template["options"])
            worker_options["env"] = {**env, "CUDA_VISIBLE_DEVICES": devices}
            cluster.worker_spec[index] = {"cls": template["cls"], "options": worker_options}
        cluster.sync(cluster._correct_state)
        cluster.wait_for_workers(n_workers)
    except BaseException:
        cluster.close()
        raise
    return cluster


def check_backend(backend: str) -> str:
    """``backend`` if a task runner can be built for it here, else a one-line ConfigError."""
    if backend in AVAILABLE_BACKENDS:
        return backend
    raise ConfigError(
        f"hardware.backend: {backend!r} is not a backend; use one of {', '.join(BACKENDS)}"
    )


def make_task_runner(
    backend: str,
    *,
    gpus_per_job: int = 1,
    address: str | None = None,
    n_gpus: int | None = None,
    threads: int | None = None,
) -> DaskTaskRunner:
    """The ``DaskTaskRunner`` for ``hardware.backend``.

    Arguments:
        backend: ``local`` or ``address`` (the batch backends need a cluster that lives as long
            as the runner: use :func:`open_task_runner`).
        gpus_per_job: GPUs one job holds (the largest over the run's jobs).
        address: the scheduler address for ``address``.
        n_gpus: CUDA GPUs on this machine (default: detected).
        threads: torch threads per task on local workers (default ``$PRIORFLOW_TORCH_THREADS``
            or 1).
    """
    from prefect_dask import DaskTaskRunner

    check_backend(backend)
    if backend == "local":
        n_gpus = cuda_gpu_count() if n_gpus is None else n_gpus
        n_workers, slots, groups = local_worker_layout(gpus_per_job, n_gpus)
        return DaskTaskRunner(
            cluster_class=local_cluster,
            cluster_kwargs={
                "n_workers": n_workers,
                "gpus_per_worker": slots,
                "visible_devices": groups,
                "torch_threads": torch_threads() if threads is None else threads,
            },
        )
    if backend == "address":
        if not address:
            raise ConfigError(
                "hardware.address: required with backend 'address'; give the Dask scheduler,"
                " e.g. 'tcp://10.0.0.5:8786'"
            )
        return DaskTaskRunner(address=address)
    raise ConfigError(
        f"hardware.backend: {backend} needs a cluster for the run; use open_task_runner"
    )


@contextlib.contextmanager
def open_task_runner(
    hardware: Any,
    run_dir: str | os.PathLike[str],
    pending: list[Any],
    *,
    run_id: str | None = None,
    n_gpus: int | None = None,
) -> Iterator[Any]:
    """The task runner of ``hardware.backend`` for the generation jobs ``pending``.

    ``local``/``address``: :func:`make_task_runner`. ``slurm``/``pbs``/``lsf``: a batch cluster
    (:func:`flows.jobqueue.jobqueue_runner`) with ``min(len(pending), hardware.max_workers)``
    worker jobs of ``max(job.gpus)`` GPUs each, closed when the block ends.
    """
    gpus_per_job = max((int(job.gpus) for job in pending), default=0)
    backend = check_backend(hardware.backend)
    if backend in JOBQUEUE_BACKENDS:
        from flows.jobqueue import jobqueue_runner

        with jobqueue_runner(hardware, run_dir, pending, gpus_per_job, run_id=run_id) as started:
            yield started.runner
        return
    yield make_task_runner(
        backend, gpus_per_job=max(1, gpus_per_job), address=hardware.address, n_gpus=n_gpus
    )


@contextlib.contextmanager
def aggregation_runner(
    hardware: Any, run_dir: str | os.PathLike[str], sizes: int, *, run_id: str | None = None
) -> Iterator[Any]:
    """The task runner of ``hardware.aggregate.where: worker``: CPU workers with the
    ``hardware.aggregate`` resources, one per size at most (``hardware.max_workers`` bounds it).

    ``local``: one worker process (no GPU); ``address``: the existing scheduler's workers; a
    batch backend: batch jobs of their own (``kind="aggregate"``, no GPU).
    """
    from prefect_dask import DaskTaskRunner

    backend = check_backend(hardware.backend)
    if backend in JOBQUEUE_BACKENDS:
        from flows.jobqueue import jobqueue_runner

        with jobqueue_runner(
            hardware, run_dir, sizes, 0, kind="aggregate", run_id=run_id
        ) as started:
            yield started.runner
        return
    if backend == "address":
        yield DaskTaskRunner(address=hardware.address)
        return
    yield DaskTaskRunner(
        cluster_class=local_cluster,
        cluster_kwargs={"n_workers": 1, "torch_threads": hardware.aggregate.cpus},
    )


def job_resources(gpus: int, backend: str, n_gpus: int | None = None) -> dict[str, int]:
    """The Dask resources one job asks for: ``{"GPU": gpus}``, or the single slot on CPU."""
    if backend == "local":
        n_gpus = cuda_gpu_count() if n_gpus is None else n_gpus
        if n_gpus == 0:
            return {"GPU": 1}
    return {"GPU": max(1, int(gpus))}


def check_workers(client: Any, gpus: int, address: str | None = None) -> int:
    """Check that an existing scheduler's workers can run a job holding ``gpus`` GPU slots.

    A job annotated with ``resources={"GPU": n}`` waits forever on a cluster where no worker
    advertises that much ``GPU``: refuse it with a one-line ConfigError instead. A scheduler with
    no worker yet is accepted (workers may join later). Returns the number of fitting workers.
    """
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    if not workers:
        return 0
    fitting = [w for w in workers.values() if (w.get("resources") or {}).get("GPU", 0) >= gpus]
    if not fitting:
        where = address or (getattr(client, "scheduler", None) and client.scheduler.address)
        raise ConfigError(
            f"hardware.address: none of the {len(workers)} workers at {where} advertises"
            f" the Dask resource GPU={gpus}; start them with"
            f" 'dask worker {where} --nthreads 1 --resources GPU={gpus}'"
        )
    return len(fitting)


@contextlib.contextmanager
def use_task_runner(runner: Any) -> Iterator[Any]:
    """Start ``runner`` and make it the current flow run's task runner for the block.

    A flow's task runner is fixed when the flow is decorated, but ours comes from the run config,
    a flow parameter: inside the flow, ``task.submit``/``task.map`` in this block go to
    ``runner``; the cluster closes when the block ends.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("use_task_runner must be used inside a flow run")
    with runner as started, context.model_copy(update={"task_runner": started}):
        yield started
