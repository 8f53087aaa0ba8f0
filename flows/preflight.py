"""Where a run's jobs will run, checked before anything is written or submitted.

- a batch backend (slurm, pbs, lsf): its submit command is on ``PATH``; for SLURM, the worker
  job script is rendered and ``sbatch --test-only`` must accept it (a bad partition, account or
  GPU request is one line, not a flow waiting for workers that never come);
- ``address``: a Dask scheduler answers there and has workers that can hold a job's GPUs.

``priorflow run`` checks before it starts a Prefect server, and the flow again before it creates
the store (a deployment starts it without the command).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from priorflow.config import BATCH_BACKENDS, Hardware
from priorflow.errors import ConfigError
from priorflow.run.cluster import jobqueue_spec

SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "lsf": "bsub"}


def check_where_jobs_run(hardware: Hardware, gpus_per_job: int, wait: float = 10.0) -> None:
    """Raise a one-line :class:`ConfigError` when the jobs of ``hardware`` cannot run (module
    docstring). ``wait``: seconds a scheduler may take to answer, and its workers to appear."""
    if hardware.backend in BATCH_BACKENDS:
        _check_batch(hardware, gpus_per_job)
    elif hardware.backend == "address":
        _check_scheduler(hardware.address or "", max(1, gpus_per_job), wait)


def _check_batch(hardware: Hardware, gpus_per_job: int) -> None:
    from flows.jobqueue import dry_run_submit, make_cluster

    command = SUBMIT_COMMANDS[hardware.backend]
    if shutil.which(command) is None:
        raise ConfigError(
            f"hardware.backend: {hardware.backend} submits jobs with {command}, which is not on"
            " PATH — run from a login node of the cluster (module load ...), or use backend local"
        )
    if hardware.backend != "slurm":
        return  # PBS and LSF have no dry run
    with tempfile.TemporaryDirectory(prefix="priorflow-preflight-") as scratch:
        class_path, kwargs = jobqueue_spec(hardware, scratch, gpus_per_job, {})
        for folder in ("logs", "scratch"):
            Path(scratch, "cluster", folder).mkdir(parents=True)
        cluster = make_cluster(class_path, kwargs)
        try:
            dry_run_submit(hardware.backend, cluster.job_script(), Path(scratch))
        finally:
            cluster.close()


def _check_scheduler(address: str, gpus: int, wait: float) -> None:
    from distributed import Client

    from flows.runners import check_workers

    try:
        client = Client(address, timeout=wait)
    except (OSError, TimeoutError) as error:
        raise ConfigError(
            f"hardware.address: no Dask scheduler answers at {address} ({type(error).__name__})"
            " — start it (dask scheduler) or fix the address"
        ) from None
    with client:
        deadline = time.monotonic() + wait
        while not _workers(client) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not _workers(client):
            raise ConfigError(
                f"hardware.address: the scheduler at {address} has no workers (waited"
                f" {wait:.0f} s) — start them with 'dask worker {address} --nthreads 1"
                f" --resources GPU={gpus}'"
            )
        check_workers(client, gpus, address)


def _workers(client: Any) -> dict:
    return client.scheduler_info(n_workers=-1).get("workers", {})
