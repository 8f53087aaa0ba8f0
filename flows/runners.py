"""The Dask task runners of a run, built from the config's ``hardware`` section.

- ``local``: a ``LocalCluster`` of worker processes laid out by
  :func:`priorflow.run.local.local_layout` (one per group of a job's GPUs, or as many as the
  cores hold ``hardware.gen.cpus`` torch threads each; bounded by ``ram``, ``max_workers`` and
  the tasks), one task at a time each;
- ``address``: an existing Dask scheduler (``hardware.address``); its workers must advertise the
  ``GPU`` resource (``dask worker ADDRESS --resources GPU=1``);
- ``slurm``, ``pbs``, ``lsf``: a dask-jobqueue cluster of batch jobs (:mod:`flows.jobqueue`),
  its job script recorded as an artifact of the run.

:func:`generation_runner` and :func:`aggregation_runner` are context managers that yield a
*started* task runner; the flow submits its tasks to it with the task runner's public
``submit`` (what ``task.submit`` does with the flow's own runner), so the runner is chosen from
the config at run time and every task run stays in the one flow run. The runner and its cluster
close when the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from priorflow.config import BATCH_BACKENDS, Hardware
from priorflow.errors import ConfigError
from priorflow.plan import batches
from priorflow.run.environment import TORCH_THREADS_ENV
from priorflow.run.local import LocalLayout, local_layout

if TYPE_CHECKING:
    from distributed import LocalCluster
    from prefect.task_runners import TaskRunner


def local_cluster(
    n_workers: int = 1,
    gpus_per_worker: int = 1,
    visible_devices: list[str] | None = None,
    torch_threads: int = 1,
    dashboard_address: str = "127.0.0.1:0",
    **kwargs: Any,
) -> LocalCluster:
    """A ``LocalCluster`` of worker processes, one task at a time each (one Dask thread) with
    ``torch_threads`` torch threads, each advertising ``{"GPU": gpus_per_worker}``.

    Arguments:
        n_workers: worker processes.
        gpus_per_worker: the value of each worker's ``GPU`` resource.
        visible_devices: ``CUDA_VISIBLE_DEVICES`` of each worker (length ``n_workers``), or None
            to leave devices alone (CPU-only machine).
        torch_threads: exported to the workers as ``PRIORFLOW_TORCH_THREADS``.
        dashboard_address: where the dashboard listens (``hardware.dashboard_address``; the
            default is loopback and a free port; ``None`` does not disable it).
        kwargs: more ``LocalCluster`` options.
    """
    from distributed import LocalCluster

    env = {TORCH_THREADS_ENV: str(torch_threads)}
    options = dict(
        # A failed task is reported once, by the flow; the workers' own tracebacks are noise.
        silence_logs=logging.CRITICAL,
        threads_per_worker=1,
        processes=True,
        resources={"GPU": gpus_per_worker},
        dashboard_address=dashboard_address,
        env=env,
        **kwargs,
    )
    if visible_devices is None:
        return _bounded_wait(LocalCluster, n_workers=n_workers, **options)
    if len(visible_devices) != n_workers:
        raise ValueError("visible_devices needs one entry per worker")
    # One spec per worker so that each sees only its own GPUs.
    cluster = _bounded_wait(LocalCluster, n_workers=0, **options)
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


def local_task_runner(layout: LocalLayout, dashboard_address: str = "127.0.0.1:0") -> Any:
    """The ``DaskTaskRunner`` of the local backend (not started), laid out by ``layout``
    (:func:`priorflow.run.local.local_layout`: workers, torch threads, GPU slots, devices)."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(
        cluster_class=local_cluster,
        cluster_kwargs={
            "n_workers": layout.workers,
            "gpus_per_worker": layout.slots,
            "visible_devices": layout.visible_devices,
            "torch_threads": layout.threads,
            "dashboard_address": dashboard_address,
        },
    )


def generation_layout(hardware: Hardware, pending: list[Any], n_gpus: int) -> LocalLayout:
    """The local workers for the generation jobs ``pending`` (:func:`local_layout` with
    ``hardware.gen.cpus``, ``ram``, ``hardware.max_workers`` and the number of tasks)."""
    from dask.utils import parse_bytes

    gpus_per_job = max((int(job.gpus) for job in pending), default=0)
    per_task = pending[0].spec.members_per_task if pending else 1
    return local_layout(
        max(1, gpus_per_job),
        n_gpus,
        cpus=hardware.gen.cpus,
        ram=parse_bytes(hardware.gen.ram),
        tasks=len(batches(pending, per_task)) if pending else None,
        max_workers=hardware.max_workers,
    )


def address_task_runner(address: str | None) -> Any:
    """The ``DaskTaskRunner`` of an existing scheduler (not started)."""
    from prefect_dask import DaskTaskRunner

    if not address:
        raise ConfigError(
            "hardware.address: required with backend 'address'; give the Dask scheduler,"
            " e.g. 'tcp://10.0.0.5:8786'"
        )
    return DaskTaskRunner(address=address)


@contextlib.contextmanager
def _started(runner: Any) -> Iterator[TaskRunner]:
    with runner as started:
        yield started


@contextlib.contextmanager
def generation_runner(
    hardware: Hardware,
    run_dir: str | os.PathLike[str],
    pending: list[Any],
    *,
    run_id: str | None = None,
    n_gpus: int = 0,
) -> Iterator[tuple[TaskRunner, int]]:
    """The started task runner of ``hardware.backend`` for the generation jobs ``pending``, and
    how many jobs its workers run at once.

    ``local``: :func:`local_task_runner`; ``address``: the scheduler, whose workers are checked
    for the ``GPU`` slots a job needs; ``slurm``/``pbs``/``lsf``: a batch cluster
    (:func:`flows.jobqueue.jobqueue_runner`) of ``min(len(pending), hardware.max_workers)``
    worker jobs with ``max(job.gpus)`` GPUs each.
    """
    gpus_per_job = max((int(job.gpus) for job in pending), default=0)
    backend = hardware.backend
    if backend in BATCH_BACKENDS:
        from flows.jobqueue import jobqueue_runner

        with (
            jobqueue_runner(hardware, run_dir, pending, gpus_per_job, run_id=run_id) as cluster,
            _started(cluster.runner) as runner,
        ):
            yield runner, max(1, cluster.jobs)
        return
    if backend == "address":
        with _started(address_task_runner(hardware.address)) as runner:
            fitting = check_workers(runner.client, max(1, gpus_per_job), hardware.address)
            yield runner, max(1, fitting)
        return
    layout = generation_layout(hardware, pending, n_gpus)
    runner = local_task_runner(layout, dashboard_address=hardware.dashboard_address)
    with _started(runner) as runner:
        yield runner, layout.workers


@contextlib.contextmanager
def aggregation_runner(
    hardware: Hardware, run_dir: str | os.PathLike[str], sizes: int, *, run_id: str | None = None
) -> Iterator[TaskRunner]:
    """The started task runner of the aggregation tasks.

    ``hardware.aggregate.where: flow``: threads of the flow's own process. ``worker``: CPU
    workers with the ``hardware.aggregate`` resources, one per size at most (``local``: one
    worker process; ``address``: the scheduler's workers; a batch backend: batch jobs of their
    own, no GPU).
    """
    from prefect.task_runners import ThreadPoolTaskRunner

    backend = hardware.backend
    if hardware.aggregate.where == "flow":
        runner: Any = ThreadPoolTaskRunner()
    elif backend in BATCH_BACKENDS:
        from flows.jobqueue import jobqueue_runner

        with (
            jobqueue_runner(
                hardware, run_dir, sizes, 0, kind="aggregate", run_id=run_id
            ) as cluster,
            _started(cluster.runner) as started,
        ):
            yield started
        return
    elif backend == "address":
        runner = address_task_runner(hardware.address)
    else:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(
            cluster_class=local_cluster,
            cluster_kwargs={
                "n_workers": 1,
                "torch_threads": hardware.aggregate.cpus,
                "dashboard_address": hardware.dashboard_address,
            },
        )
    with _started(runner) as started:
        yield started


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


#: How long a task of a local cluster may wait with no worker able to run it.
NO_WORKERS_TIMEOUT = "5 minutes"


def _bounded_wait(cluster_class: Any, **options: Any) -> Any:
    """``cluster_class(**options)`` whose scheduler fails a task that no worker can run for
    :data:`NO_WORKERS_TIMEOUT`, instead of letting it wait forever: if every local worker died
    and none could be restarted (a machine under memory or CPU pressure), the flow fails and
    names the missing members. Batch clusters wait in a queue legitimately and keep the default.
    """
    import dask

    with dask.config.set({"distributed.scheduler.no-workers-timeout": NO_WORKERS_TIMEOUT}):
        return cluster_class(**options)
