"""Where the jobs will run is checked before anything is written: a batch backend without its
submit command, a SLURM that refuses the worker job, a scheduler nobody runs or with no workers.
Before, these waited forever or failed after the store was written."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from flows.preflight import check_where_jobs_run
from priorflow.config import load_config
from priorflow.errors import ConfigError
from tests._runs import CONFIGS
from tests.slurm_local import slurm_cluster

__all__ = ["slurm_cluster"]  # the fixture, imported for this module

PRIORFLOW = str(Path(sys.executable).parent / "priorflow")


def hardware(*overrides: str):
    return load_config(CONFIGS / "slurm.yaml", list(overrides)).hardware


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("backend", "command"), [("slurm", "sbatch"), ("pbs", "qsub"), ("lsf", "bsub")]
)
def test_a_batch_backend_without_its_submit_command(monkeypatch, tmp_path, backend, command):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(ConfigError, match=f"submits jobs with {command}, which is not on PATH"):
        check_where_jobs_run(hardware(f"hardware.backend={backend}"), 1)


def test_no_scheduler_at_the_address():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"no Dask scheduler answers at {address}"):
        check_where_jobs_run(
            hardware("hardware.backend=address", f"hardware.address={address}"), 1, wait=2
        )


@pytest.mark.integration
def test_a_scheduler_without_workers():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, dashboard_address="127.0.0.1:0") as empty:
        address = empty.scheduler_address
        with pytest.raises(ConfigError, match="has no workers .* --resources GPU=1"):
            check_where_jobs_run(
                hardware("hardware.backend=address", f"hardware.address={address}"), 1, wait=2
            )


@pytest.mark.integration
def test_slurm_refusing_the_worker_job(slurm_cluster, tmp_path):
    ok = hardware('hardware.scheduler_host="127.0.0.1"', "hardware.gen.partition=gpu")
    check_where_jobs_run(ok, 1)  # the local cluster accepts it
    refused = ok.model_copy(update={"gen": ok.gen.model_copy(update={"partition": "nowhere"})})
    with pytest.raises(ConfigError, match="SLURM refuses the worker job"):
        check_where_jobs_run(refused, 1)
    assert not list(tmp_path.iterdir())


def test_the_command_refuses_before_writing_anything(tmp_path):
    """``priorflow run`` with backend slurm where sbatch is missing: one line, exit 2, no run
    directory, no Prefect server."""
    import subprocess

    from tests._runs import ORIGINAL_EXAMPLE, make_card, write_config, write_model_dir

    model = write_model_dir(tmp_path / "model", make_card(archive=None))
    config = write_config(tmp_path / "run.yaml", ORIGINAL_EXAMPLE)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python, no sbatch
    result = subprocess.run(
        [
            PRIORFLOW,
            "run",
            str(config),
            "--set",
            f"model_path={model}",
            "--set",
            f"output_dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: hardware.backend: slurm submits jobs with sbatch, which is not on PATH — run from"
        " a login node of the cluster (module load ...), or use backend local"
    ]
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".prefect").exists()
