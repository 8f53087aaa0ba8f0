"""The prior-generation flow: one Prefect task per (trajectory size, start date, member).

``generate_priors(config_path, overrides, run_id, check, config)`` (flow ``prior-generation``):

1. takes the run config (loaded once: from ``config_path`` with :func:`flows.run_config.load_run_config`,
   or the already loaded ``config`` that ``priorflow run`` passes), checks the model card,
   checkpoint and archive and plans the run (:func:`priorflow.run.prepare.prepare_run`; a user
   error fails the flow with its one-line message);
2. creates the store schema-first (or checks the existing one when a run_id is resumed), with the
   flow run id in its provenance; on a resume, members whose data no longer matches their done
   mark (:func:`priorflow.store.integrity.damaged_jobs`) lose their mark and are generated again;
3. starts the Dask task runner of ``hardware`` (:func:`flows.runners.generation_runner`: a
   LocalCluster, an existing scheduler, or a SLURM/PBS/LSF cluster scaled to the pending jobs)
   and submits every job that has no done mark to it at once, each under
   ``dask.annotate(resources={"GPU": n})``;
4. waits for all of them, recording the jobs that failed (a task's exception after its retries,
   or a Dask error such as ``KilledWorker``, which Prefect does not turn into a task state);
5. aggregates every complete trajectory size (:mod:`tasks.aggregate`: table, report and link
   artifacts), in the flow process, or on a CPU worker with ``hardware.aggregate.where:
   worker``;
6. ends Failed, naming the missing members, if any member has no done mark;
7. with ``check=True`` (the nightly deployment), runs the prior check (:mod:`tasks.check`) with
   the config's ``check:`` thresholds and ends Failed when its verdict is fail (the reasons one
   per line); else returns the run directory.

A rerun with the same ``run_id`` resumes: done members are not submitted again, and a finished
run is left byte-identical (aggregation writes nothing when the marks have not changed).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dask
from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.runtime import flow_run

from flows.preflight import check_where_jobs_run
from flows.run_config import load_run_config
from flows.runners import aggregation_runner, generation_runner
from priorflow.atomic import write_text
from priorflow.config import RunConfig
from priorflow.core.devices import cuda_device_count
from priorflow.plan import Job, RunPlan, batches, task_label
from priorflow.run.local import job_resources
from priorflow.run.prepare import prepare_run
from priorflow.store import create_store, mark_path, missing_jobs, run_provenance
from priorflow.store.integrity import damaged_jobs
from tasks.aggregate import aggregate_size
from tasks.check import check_priors
from tasks.generate import generate_members

FLOW_NAME = "prior-generation"
FLOW_RECORD = ".flow-run.json"
SHOWN_NAMES = 20


class MissingMembersError(RuntimeError):
    """A run ended with members that have no done mark (named in the message)."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text}"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


@flow(name=FLOW_NAME, persist_result=False)
def generate_priors(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    run_id: str | None = None,
    check: bool = False,
    config: RunConfig | None = None,
) -> str:
    """Generate the prior trajectories of a run config into its zarr store.

    Arguments:
        config_path: the run config (YAML).
        overrides: ``key=value`` items, as ``priorflow run --set`` (e.g.
            ``["diffusion.num_steps=32"]``).
        run_id: the run's name (default: the config's ``run_id``, else a new timestamped one);
            reuse one to resume that run.
        check: run the prior check after generation (unless the config says
            ``check.enabled: false``); the flow fails when the check fails.
        config: the loaded config instead of ``config_path``, ``overrides`` and ``run_id``
            (what ``priorflow run`` passes, so that a config is read and its blocks resolved
            once).

    Returns:
        The run directory ``<output_dir>/<run_id>`` (``prior.zarr``, ``config.yaml``).
    """
    logger = get_run_logger()
    began = datetime.now(UTC)
    if config is None:
        if config_path is None:
            raise ValueError("generate_priors needs config_path or config")
        config = load_run_config(config_path, overrides, run_id)
    prepared = prepare_run(config)
    plan = prepared.plan
    run_dir = str(plan.run_dir)
    check_where_jobs_run(config.hardware, max((job.gpus for job in plan.jobs), default=0))
    provenance = run_provenance(prepared.checkpoint, flow_run_id=flow_run.id, start_time=began)
    store = create_store(run_dir, plan, config, provenance)
    logger.info(f"run {plan.run_id}: {plan.num_jobs} jobs, store {store}")
    flow_run_id = str(flow_run.id)
    crash_dead_flow_run(run_dir, flow_run_id)
    try:
        _complete(config, plan, run_dir, check)
    finally:  # an ending this process saw: the record is only for deaths it could not report
        release_flow_record(run_dir, flow_run_id)
    return run_dir


def _complete(config: RunConfig, plan: RunPlan, run_dir: str, check: bool) -> None:
    """Generate what is missing or damaged, aggregate, fail naming missing members, check."""
    logger = get_run_logger()

    damaged = damaged_jobs(run_dir, plan)
    if damaged:  # data changed after its member was marked done: generate exactly those again
        logger.warning(
            f"{len(damaged)} members no longer match their done marks (their data changed since"
            f" they were written): {_names([job.name for job in damaged])}; generating them again"
        )
        for job in damaged:
            mark_path(run_dir, job).unlink(missing_ok=True)
    pending = missing_jobs(run_dir, plan)
    failed: dict[str, str] = {}
    if pending:
        logger.info(
            f"{plan.num_jobs - len(pending)} of {plan.num_jobs} members already done;"
            f" submitting {len(pending)}"
        )
        failed |= _generate(config, run_dir, pending, plan.run_id)
    else:
        logger.info(f"all {plan.num_jobs} members already done; nothing to generate")

    missing = {job.name for job in missing_jobs(run_dir, plan)}
    complete = [s.group for s in plan.sizes if not any(j.name in missing for j in s.jobs)]
    if complete:
        failed |= _aggregate(config, run_dir, plan.run_id, complete)

    missing_names = [job.name for job in plan.jobs if job.name in missing]
    if missing_names:
        first = next((failed[n] for n in missing_names if n in failed), None)
        cause = f" (first error: {first})" if first else ""
        raise MissingMembersError(
            f"run {plan.run_id}: {len(missing_names)} of {plan.num_jobs} members missing:"
            f" {_names(missing_names)}{cause}; run again with run_id {plan.run_id} to resume"
        )
    if failed:
        raise MissingMembersError(
            f"run {plan.run_id}: {_names(sorted(failed))} failed: {next(iter(failed.values()))}"
        )
    if check:
        if config.check.enabled:
            check_priors(run_dir, config.check.model_dump())
        else:
            logger.info("prior check skipped: the config says check.enabled: false")


def crash_dead_flow_run(run_dir: str, flow_run_id: str) -> str | None:
    """Mark the run's previous flow run Crashed when the process that ran it is gone (killed: it
    could not say so itself), then record this flow run as the run's. Returns the id marked.

    The record is ``<run_dir>/.flow-run.json``: flow run id, process id and host, removed when
    the flow run ends in this process (:func:`release_flow_record`), so only a killed one leaves
    it. A flow run on another host is left alone (its process cannot be seen from here).
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from flows.server import pid_alive

    path = Path(run_dir) / FLOW_RECORD
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None
    marked = None
    if (
        isinstance(previous, dict)
        and previous.get("flow_run_id") not in (None, flow_run_id)
        and previous.get("host") == socket.gethostname()
        and not pid_alive(int(previous.get("pid", 0)))
    ):
        with get_client(sync_client=True) as client:
            try:
                old = client.read_flow_run(previous["flow_run_id"])
            except Exception:  # another server's run: nothing to mark here
                old = None
            if old is not None and old.state is not None and not old.state.is_final():
                message = f"its process died (pid {previous['pid']}); resumed by {flow_run_id}"
                client.set_flow_run_state(old.id, Crashed(message=message), force=True)
                marked = str(old.id)
                get_run_logger().warning(
                    f"flow run {marked} was still {old.state.type.value}: {message}"
                )
    record = {"flow_run_id": flow_run_id, "pid": os.getpid(), "host": socket.gethostname()}
    write_text(path, json.dumps(record) + "\n")
    return marked


def release_flow_record(run_dir: str, flow_run_id: str) -> None:
    """Remove the run's flow-run record if it is this flow run's (so a finished rerun leaves
    every byte of the run as it was)."""
    path = Path(run_dir) / FLOW_RECORD
    try:
        if json.loads(path.read_text()).get("flow_run_id") == flow_run_id:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _generate(config: RunConfig, run_dir: str, pending: list[Job], run_id: str) -> dict[str, str]:
    """Run every pending job on the config's task runner; the failures by job name.

    Jobs go in tasks of ``members_per_task`` members of one size (sampled as one batch). As
    many tasks are in the workers' hands as they run at once, and the next is submitted when
    one ends: a worker that dies (out of memory, a crash in the backbone) takes down only the
    job it was running, not every job queued on it (Dask fails all of them with KilledWorker
    once the worker died ``allowed-failures`` times).
    """
    logger = get_run_logger()
    backend = config.hardware.backend
    n_gpus = cuda_device_count() if backend == "local" else 0
    failed: dict[str, str] = {}
    queue = batches(pending, config.members_per_task)
    with generation_runner(config.hardware, run_dir, pending, run_id=run_id, n_gpus=n_gpus) as (
        runner,
        slots,
    ):
        running: dict[Any, tuple[Job, ...]] = {}
        while queue or running:
            while queue and len(running) < slots:
                jobs = queue.pop(0)
                with dask.annotate(resources=job_resources(jobs[0].gpus, backend, n_gpus)):
                    future = runner.submit(
                        generate_members,
                        parameters={
                            "jobs": list(jobs),
                            "run_dir": run_dir,
                            "label": task_label(jobs),
                        },
                    )
                running[future] = jobs
            future = next(as_completed(list(running)))
            jobs = running.pop(future)
            try:
                future.result()
            except Exception as error:  # task failure or a Dask error (KilledWorker...)
                for job in jobs:
                    failed[job.name] = _one_line(error)
                logger.error(f"{task_label(jobs)} failed: {_one_line(error)}")
    return failed


def _aggregate(config: RunConfig, run_dir: str, run_id: str, groups: list[str]) -> dict[str, Any]:
    """Aggregate ``groups`` where ``hardware.aggregate.where`` says; the failures by name."""
    logger = get_run_logger()
    failed: dict[str, str] = {}
    with aggregation_runner(config.hardware, run_dir, len(groups), run_id=run_id) as runner:
        futures = {
            group: runner.submit(aggregate_size, parameters={"run_dir": run_dir, "size": group})
            for group in groups
        }
        for group, future in futures.items():
            try:
                future.result()
            except Exception as error:
                failed[f"aggregate-{group}"] = _one_line(error)
                logger.error(f"aggregation of {group} failed: {failed[f'aggregate-{group}']}")
    return failed
