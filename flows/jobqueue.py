"""Batch-scheduler task runners (SLURM, PBS, LSF) for the flow, from the config's ``hardware``.

:func:`jobqueue_runner` builds the dask-jobqueue cluster with
:func:`priorflow.run.cluster.jobqueue_spec` (resources of ``hardware.gen`` or ``hardware.aggregate``,
``--gres=gpu:N``, logs and scratch under ``<run_dir>/cluster/``, the Prefect environment exported
in the job prologue), records its job script as a markdown artifact of the flow run, scales it
to a fixed number of worker jobs (``scale(jobs=worker_count(jobs, hardware.max_workers))``, not
adaptive scaling, which races the submission of the tasks) and yields a
``DaskTaskRunner(address=cluster.scheduler_address)``. The cluster (and its jobs) is closed when
the block ends, however it ends.

A worker job lost while its task runs (``scancel``, a node failure) is Dask's to handle: the task
is rescheduled on another worker; a member whose task fails for good has no done mark, and a
rerun of the same ``run_id`` completes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from priorflow.config import Hardware
from priorflow.errors import ConfigError
from priorflow.run.cluster import JOBQUEUE_CLASSES, cluster_paths, jobqueue_spec, worker_count
from priorflow.run.environment import TORCH_THREADS_ENV, forwarded_env
from tasks.keys import artifact_key


@dataclass(frozen=True)
class JobqueueCluster:
    """A started batch-scheduler cluster: its task runner, job script and size.

    Attributes:
        runner: ``DaskTaskRunner(address=...)`` (not started).
        cluster: the dask-jobqueue cluster (e.g. ``cluster.workers`` / ``job_id``).
        job_script: the batch script of one worker job.
        jobs: how many worker jobs were asked for.
        artifact_key: the key of the job-script artifact (None outside a flow run).
    """

    runner: Any
    cluster: Any
    job_script: str
    jobs: int
    artifact_key: str | None


def make_cluster(class_path: str, kwargs: Mapping[str, Any]) -> Any:
    """Instantiate ``class_path`` (from :func:`~priorflow.run.cluster.jobqueue_spec`) with
    ``kwargs``; no job starts."""
    import importlib

    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**dict(kwargs))


def worker_env(hardware: Hardware, kind: str = "gen") -> dict[str, str]:
    """The environment exported in each job's prologue.

    :func:`priorflow.run.environment.forwarded_env` (``PREFECT_API_URL`` and the rest of ``PREFECT_*``,
    ``PRIORFLOW_*``, ``DO_NOT_TRACK``) plus ``PRIORFLOW_TORCH_THREADS`` = the job's ``cpus``
    unless it is set here already.
    """
    env = forwarded_env()
    env.setdefault(TORCH_THREADS_ENV, str(getattr(hardware, kind).cpus))
    return env


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def loopback_warning(env: Mapping[str, str], hardware: Hardware) -> str | None:
    """A warning when worker jobs get a loopback ``PREFECT_API_URL`` but the scheduler is not on
    loopback (workers on other nodes): their task states and logs would not reach the server."""
    from urllib.parse import urlparse

    url = env.get("PREFECT_API_URL", "")
    if urlparse(url).hostname not in LOOPBACK_HOSTS:
        return None
    if (hardware.scheduler_host or "") in LOOPBACK_HOSTS or hardware.interface == "lo":
        return None
    return (
        f"PREFECT_API_URL is {url}, a loopback address: worker jobs on other nodes cannot reach"
        " it; start the Prefect server on an address the compute nodes reach (prefect server"
        " start --host 0.0.0.0) and export PREFECT_API_URL=http://<this host>:<port>/api"
    )


def job_script_markdown(
    script: str, backend: str, kind: str, jobs: int, gpus_per_job: int, run_dir: Path
) -> str:
    """The job-script artifact: what was submitted, how many times, where the logs are."""
    paths = cluster_paths(run_dir)
    return "\n".join(
        [
            f"# {backend} job script ({kind})",
            "",
            "| | |",
            "|---|---|",
            f"| cluster | `{JOBQUEUE_CLASSES[backend]}` |",
            f"| worker jobs | {jobs} |",
            f"| GPUs per job | {gpus_per_job} |",
            f"| job logs | `{paths['logs']}` |",
            "",
            "```bash",
            script.rstrip(),
            "```",
            "",
        ]
    )


def _record_script(markdown: str, run_id: str | None, kind: str, description: str) -> str | None:
    """Create the markdown artifact in the current flow run (None outside one)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    suffix = "job-script" if kind == "gen" else f"{kind}-job-script"
    key = artifact_key("priorflow", run_id or "run", suffix)
    create_markdown_artifact(markdown, key=key, description=description)
    return key


def dry_run_submit(backend: str, script: str, directory: Path) -> None:
    """Ask SLURM whether it would accept the worker job (``sbatch --test-only``), so that a bad
    partition, account or GPU request is a one-line ConfigError instead of a flow that waits
    forever for workers that never come (dask-jobqueue only logs a refused submission).

    PBS and LSF have no such dry run: nothing is checked for them.
    """
    import shutil
    import subprocess

    if backend != "slurm" or shutil.which("sbatch") is None:
        return
    path = directory / ".job-script-test.sh"
    path.write_text(script)
    try:
        result = subprocess.run(
            ["sbatch", "--test-only", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return  # no answer: let the real submission tell
    finally:
        path.unlink(missing_ok=True)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        why = "; ".join(lines[-2:]) or f"exit status {result.returncode}"
        raise ConfigError(
            f"hardware: SLURM refuses the worker job ({why}) — check hardware.account and the"
            " partition, cpus, ram, time and gpus of hardware.gen/aggregate (see the job script"
            " artifact)"
        )


def _log_warning(text: str) -> None:
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is not None:
        from prefect import get_run_logger

        get_run_logger().warning(text)


@contextlib.contextmanager
def jobqueue_runner(
    hardware: Hardware,
    run_dir: str | os.PathLike[str],
    jobs: int | Sized,
    gpus_per_job: int,
    *,
    kind: Literal["gen", "aggregate"] = "gen",
    run_id: str | None = None,
    env: Mapping[str, str] | None = None,
    max_workers: int | None = None,
) -> Iterator[JobqueueCluster]:
    """A dask-jobqueue cluster for the block, scaled to a fixed number of worker jobs.

    Arguments:
        hardware: the config's ``hardware`` (backend slurm, pbs or lsf).
        run_dir: the run directory (``cluster/logs``, ``cluster/scratch`` are made there).
        jobs: the jobs to run (or their number): ``worker_count(jobs, max_workers)`` workers.
        gpus_per_job: GPUs of one worker job (the largest ``job.gpus``; 0 for aggregation).
        kind: ``gen`` (``hardware.gen``) or ``aggregate`` (``hardware.aggregate``).
        run_id: names the job-script artifact ``priorflow-<run_id>-job-script``.
        env: exported in the prologue (default :func:`worker_env`).
        max_workers: the bound (default ``hardware.max_workers``).
    """
    from prefect_dask import DaskTaskRunner

    run_dir = Path(run_dir)
    env = worker_env(hardware, kind) if env is None else dict(env)
    class_path, kwargs = jobqueue_spec(
        hardware, run_dir, gpus_per_job, env, kind=kind, job_name=f"pf-{kind}-{run_dir.name}"
    )
    for path in cluster_paths(run_dir).values():
        path.mkdir(parents=True, exist_ok=True)
    count = worker_count(jobs, hardware.max_workers if max_workers is None else max_workers)
    warning = loopback_warning(env, hardware)
    if warning:
        _log_warning(warning)
    cluster = make_cluster(class_path, kwargs)
    try:
        script = cluster.job_script()
        key = _record_script(
            job_script_markdown(script, hardware.backend, kind, count, gpus_per_job, run_dir),
            run_id,
            kind,
            f"priorflow {run_id}: the {hardware.backend} job script of the {kind} workers",
        )
        if count:
            dry_run_submit(hardware.backend, script, cluster_paths(run_dir)["logs"])
        cluster.scale(jobs=count)
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        yield JobqueueCluster(runner, cluster, script, count, key)
    finally:
        try:
            cluster.close()
        except Exception as error:  # a job that never started: do not hide the first error
            _log_warning(f"closing the {hardware.backend} cluster: {type(error).__name__}")
