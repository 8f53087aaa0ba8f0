"""priorflow.run.cluster: dask-jobqueue arguments from ``hardware``, and a real SLURMCluster.

The job-script tests build the cluster objects (a Dask scheduler on loopback, no job submitted);
the integration test runs two worker jobs on the local SLURM cluster (tests/slurm_local.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dask
import pytest

from flows.jobqueue import make_cluster
from priorflow.config import BATCH_BACKENDS, load_config
from priorflow.errors import ConfigError
from priorflow.run.cluster import (
    JOBQUEUE_CLASSES,
    cluster_paths,
    jobqueue_spec,
    pbs_memory,
    worker_count,
    worker_resources,
)
from tests.slurm_local import REPO, slurm_cluster

__all__ = ["slurm_cluster"]  # the fixture, imported for this module

API = "http://127.0.0.1:4200/api"

_TEST_CONFIG = """\
model_path: model
trajectory_sizes: "24"
start_dates: ["2000-04-03 0h"]
blanket_overlap: 2
hardware:
  backend: slurm
  gpus_per_node: 2
  max_workers: 4
  gen: {cpus: 2, ram: "8GB", time: "1:00:00", partition: gpu, gpus: auto, blankets_per_gpu: 16}
  aggregate: {cpus: 1, ram: "4GB", time: "0:20:00", partition: debug}
"""


def _config(tmp_path: Path, *overrides: str):
    """configs/slurm.yaml (the shipped example) with overrides, or an equivalent of our own."""
    path = REPO / "configs" / "slurm.yaml"
    if not path.exists():
        path = tmp_path / "slurm.yaml"
        path.write_text(_TEST_CONFIG)
    pinned = (
        "hardware.backend=slurm",
        "hardware.gpus_per_node=2",
        "hardware.gen.cpus=2",
        'hardware.gen.ram="8GB"',
        'hardware.gen.time="1:00:00"',
        "hardware.gen.partition=gpu",
        "hardware.aggregate.partition=debug",
        'hardware.aggregate.ram="4GB"',
        'hardware.aggregate.time="0:20:00"',
    )
    return load_config(path, [*pinned, *overrides])


def _script(backend: str, hardware, run_dir: Path, gpus: int, **kwargs) -> str:
    """The job script of the cluster ``jobqueue_spec`` describes (no job is submitted)."""
    hardware = hardware.model_copy(update={"backend": backend})
    class_path, options = jobqueue_spec(hardware, run_dir, gpus, host="127.0.0.1", **kwargs)
    cluster = make_cluster(class_path, options)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


# ---------------------------------------------------------------------------------------------
# arguments


def test_slurm_kwargs(tmp_path):
    config = _config(tmp_path, "hardware.account=proj42")
    run_dir = tmp_path / "runs" / "r1"
    env = {"PREFECT_API_URL": API, "PRIORFLOW_NOTE": "two words; $HOME"}
    class_path, kw = jobqueue_spec(config.hardware, run_dir, 2, env, host="127.0.0.1")
    assert class_path == "dask_jobqueue.SLURMCluster"
    assert (kw["cores"], kw["processes"], kw["job_cpu"]) == (1, 1, 2)
    assert (kw["memory"], kw["walltime"], kw["queue"], kw["account"]) == (
        "8GB",
        "1:00:00",
        "gpu",
        "proj42",
    )
    assert kw["job_extra_directives"] == ["--gres=gpu:2"]
    assert kw["worker_extra_args"] == ["--resources", "GPU=2"]
    assert kw["log_directory"] == str(run_dir.absolute() / "cluster" / "logs")
    assert kw["local_directory"] == str(run_dir.absolute() / "cluster" / "scratch")
    assert kw["scheduler_options"] == {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    assert kw["job_script_prologue"] == [
        f"export PREFECT_API_URL={API}",
        "export PRIORFLOW_NOTE='two words; $HOME'",
    ]
    assert kw["job_name"] == "pf-r1"
    assert "interface" not in kw and "python" not in kw


def test_cpu_only_job_gets_no_gres_but_one_slot(tmp_path):
    config = _config(tmp_path, "hardware.gen.gpus=0")
    _, kw = jobqueue_spec(config.hardware, tmp_path, 0, {})
    assert kw["job_extra_directives"] == []
    assert kw["worker_extra_args"] == ["--resources", "GPU=1"]
    assert worker_resources(0) == {"GPU": 1} and worker_resources(3) == {"GPU": 3}
    assert "host" not in kw["scheduler_options"]  # dask's default (jobqueue.yaml) decides


def test_aggregate_resources(tmp_path):
    config = _config(tmp_path)
    _, kw = jobqueue_spec(config.hardware, tmp_path, 0, kind="aggregate")
    assert (kw["job_cpu"], kw["memory"], kw["walltime"], kw["queue"]) == (
        1,
        "4GB",
        "0:20:00",
        "debug",
    )


def test_options_and_config_fields(tmp_path):
    """Explicit options win; fields the config may carry (interface, job_prologue...) are used."""
    config = _config(tmp_path)
    _, kw = jobqueue_spec(
        config.hardware,
        tmp_path,
        1,
        {"A": "1"},
        interface="lo",
        prologue=["module load cuda"],
        job_directives_skip=["--mem"],
        local_directory="/scratch/x",
        python="/opt/py/bin/python",
        job_name="custom",
    )
    assert kw["interface"] == "lo" and kw["python"] == "/opt/py/bin/python"
    assert kw["job_script_prologue"] == ["module load cuda", "export A=1"]
    assert kw["job_directives_skip"] == ["--mem"] and kw["local_directory"] == "/scratch/x"
    assert kw["job_name"] == "custom"
    fields = _config(
        tmp_path,
        "hardware.interface=ib0",
        'hardware.scheduler_host="10.0.0.1"',
        'hardware.job_prologue="source /etc/profile\\nmodule load cuda"',  # a block scalar
        'hardware.job_directives_skip=["--mem"]',
    ).hardware
    _, kw = jobqueue_spec(fields, tmp_path, 1)
    assert kw["interface"] == "ib0" and kw["scheduler_options"]["host"] == "10.0.0.1"
    assert kw["job_script_prologue"] == ["source /etc/profile", "module load cuda"]
    assert kw["job_directives_skip"] == ["--mem"]


def test_errors(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(ConfigError, match=r"^hardware.gen.gpus: 3 — more than"):
        jobqueue_spec(config.hardware, tmp_path, 3)
    local = config.hardware.model_copy(update={"backend": "local"})
    with pytest.raises(ConfigError, match=r"^hardware.backend: 'local' has no batch scheduler"):
        jobqueue_spec(local, tmp_path, 1)
    with pytest.raises(ConfigError, match="not a variable name"):
        jobqueue_spec(config.hardware, tmp_path, 1, {"BAD-NAME": "x"})
    with pytest.raises(ValueError, match="gpus_per_job"):
        worker_resources(-1)
    assert set(JOBQUEUE_CLASSES) == {"slurm", "pbs", "lsf"}


def test_worker_count():
    assert worker_count(10, 4) == 4
    assert worker_count(3, 4) == 3
    assert worker_count(7) == 7
    assert worker_count([object()] * 5, 2) == 2
    assert worker_count(0, 4) == 0
    with pytest.raises(ConfigError, match="max_workers"):
        worker_count(3, 0)
    with pytest.raises(ValueError):
        worker_count(-1)


def test_cluster_paths_and_pbs_memory():
    assert cluster_paths("r")["logs"] == Path("r").absolute() / "cluster" / "logs"
    # what PBS reads: powers of 1024, rounded up, as dask-jobqueue formats it
    from dask_jobqueue.pbs import pbs_format_bytes_ceil

    sizes = (1, 1234, 12345678, 1234567890, 15000000000, 4 * 10**9, 64 * 10**9)
    assert [pbs_memory(n) for n in sizes] == [pbs_format_bytes_ceil(n) for n in sizes]
    assert pbs_memory(64 * 10**9) == "60GB"


def test_batch_backends_are_the_jobqueue_classes():
    assert tuple(JOBQUEUE_CLASSES) == BATCH_BACKENDS


# ---------------------------------------------------------------------------------------------
# job scripts (rendered by dask-jobqueue itself)


def test_slurm_job_script(tmp_path):
    config = _config(tmp_path, "hardware.account=proj42")
    run_dir = tmp_path / "run"
    text = _script("slurm", config.hardware, run_dir, 1, env={"PREFECT_API_URL": API})
    lines = text.splitlines()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A proj42",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=8G",
        "#SBATCH -t 1:00:00",
        "#SBATCH --gres=gpu:1",
        f"#SBATCH -o {run_dir}/cluster/logs/pf-run-%J.out",
        f"export PREFECT_API_URL={API}",
    ):
        assert line in lines, (line, text)
    worker = lines[-1]
    assert "--nthreads 1" in worker and "--resources GPU=1" in worker
    assert f"--local-directory {run_dir}/cluster/scratch" in worker
    assert lines.index(f"export PREFECT_API_URL={API}") < len(lines) - 1  # before the worker

    skipped = _script("slurm", config.hardware, run_dir, 0, job_directives_skip=["--mem"])
    assert "#SBATCH --mem" not in skipped and "--gres" not in skipped and "-A proj42" in skipped


def test_pbs_job_script(tmp_path):
    config = _config(tmp_path, "hardware.account=proj42")
    text = _script("pbs", config.hardware, tmp_path / "run", 2, env={"PREFECT_API_URL": API})
    lines = text.splitlines()
    for line in (
        "#PBS -q gpu",
        "#PBS -A proj42",
        "#PBS -l select=1:ncpus=2:mem=7630MB:ngpus=2",
        "#PBS -l walltime=01:00:00",
        f"#PBS -o {tmp_path}/run/cluster/logs/",
        f"export PREFECT_API_URL={API}",
    ):
        assert line in lines, (line, text)
    assert "--resources GPU=2" in lines[-1] and "--nthreads 1" in lines[-1]
    cpu = _script("pbs", config.hardware, tmp_path / "run", 0)
    assert "#PBS -l select=1:ncpus=2:mem=7630MB" in cpu.splitlines() and "ngpus" not in cpu


def test_lsf_job_script(tmp_path):
    config = _config(tmp_path, "hardware.account=proj42", 'hardware.gen.time="90"')
    text = _script("lsf", config.hardware, tmp_path / "run", 2, env={"PREFECT_API_URL": API})
    lines = text.splitlines()
    for line in (
        "#BSUB -q gpu",
        '#BSUB -P "proj42"',
        "#BSUB -n 2",
        '#BSUB -R "span[hosts=1]"',
        "#BSUB -W 01:30",
        '#BSUB -gpu "num=2"',
        f"export PREFECT_API_URL={API}",
    ):
        assert line in lines, (line, text)
    assert "--resources GPU=2" in lines[-1]
    assert "-gpu" not in _script("lsf", config.hardware, tmp_path / "run", 0)


# ---------------------------------------------------------------------------------------------
# a real SLURMCluster on the local SLURM cluster


def _where() -> dict:
    """Run on a worker: the SLURM job and GPUs it sees, and the prologue's variable."""
    from priorflow.run.environment import gpu_ids_from_env, slurm_job_id

    return {
        "job": slurm_job_id(),
        "gpus": gpu_ids_from_env(),
        "mark": os.environ.get("PRIORFLOW_TEST_MARK"),
    }


def _task_state(key: str, dask_scheduler=None) -> str | None:
    """Run on the scheduler: the state of task ``key`` (None before it arrives)."""
    task = dask_scheduler.tasks.get(key)
    return None if task is None else task.state


def _job(index: int) -> dict:
    time.sleep(0.3)
    return {"index": index, **_where()}


@pytest.mark.integration
def test_slurm_cluster_runs_gpu_tasks(slurm_cluster, tmp_path):
    """Two worker jobs (--gres=gpu:1 each) run tasks annotated with resources {"GPU": 1}."""
    from distributed import Client

    config = _config(
        tmp_path,
        "hardware.gen.cpus=1",
        'hardware.gen.ram="1GB"',
        'hardware.gen.time="0:10:00"',
        "hardware.max_workers=2",
    )
    run_dir = tmp_path / "run"
    env = {"PREFECT_API_URL": API, "PRIORFLOW_TEST_MARK": "from-prologue"}
    assert (
        "PRIORFLOW_TEST_MARK" not in os.environ
    )  # so the workers can only get it from the script
    class_path, kwargs = jobqueue_spec(config.hardware, run_dir, 1, env, host="127.0.0.1")
    assert slurm_cluster.wait_empty() == [], "jobs left over from another test"
    cluster = make_cluster(class_path, kwargs)
    try:
        script = cluster.job_script()
        assert "#SBATCH --gres=gpu:1" in script.splitlines()
        assert "export PRIORFLOW_TEST_MARK=from-prologue" in script.splitlines()
        workers = worker_count(4, config.hardware.max_workers)
        assert workers == 2
        cluster.scale(jobs=workers)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            seen = client.run(_where)
            job_ids = {job.job_id for job in cluster.workers.values()}
            assert {info["job"] for info in seen.values()} == job_ids
            assert sorted(gpu for info in seen.values() for gpu in info["gpus"]) == ["0", "1"]
            assert {info["mark"] for info in seen.values()} == {"from-prologue"}
            assert all(len(info["gpus"]) == 1 for info in seen.values())

            with dask.annotate(resources={"GPU": 1}):
                futures = [client.submit(_job, i, pure=False) for i in range(4)]
            results = client.gather(futures)
            assert [r["index"] for r in results] == [0, 1, 2, 3]
            assert {r["job"] for r in results} <= job_ids
            assert all(r["gpus"] in (["0"], ["1"]) for r in results)

            # The restriction reaches the scheduler: no worker has 2 GPU slots.
            with dask.annotate(resources={"GPU": 2}):
                too_big = client.submit(_job, 99, pure=False)
            state = ""
            for _ in range(50):
                state = client.run_on_scheduler(_task_state, key=too_big.key)
                if state == "no-worker":
                    break
                time.sleep(0.1)
            assert state == "no-worker"
            too_big.cancel()
    finally:
        cluster.close()
    assert slurm_cluster.wait_empty() == []
    logs = sorted(p.name for p in (run_dir / "cluster" / "logs").iterdir())
    assert {f"pf-run-{job}.out" for job in job_ids} <= set(logs)


def test_the_dashboard_listens_where_the_config_says(tmp_path):
    config = _config(tmp_path, 'hardware.dashboard_address=":8787"')
    _, kw = jobqueue_spec(config.hardware, tmp_path, 1, {})
    assert kw["scheduler_options"]["dashboard_address"] == ":8787"
