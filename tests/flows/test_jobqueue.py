"""flows.jobqueue: the batch-cluster task runner's parts that need no batch system.

The SLURM path end to end is in tests/test_flow_slurm.py; here PBS and LSF clusters are built
(their scheduler starts on loopback, no job is submitted) through the same code path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.jobqueue import (
    dry_run_submit,
    job_script_markdown,
    jobqueue_runner,
    loopback_warning,
)
from priorflow.config import load_config
from priorflow.errors import ConfigError
from tests._runs import CONFIGS

API = "http://127.0.0.1:4200/api"


def _hardware(*overrides: str):
    return load_config(CONFIGS / "slurm.yaml", list(overrides)).hardware


def test_loopback_api_warns_only_for_remote_workers():
    remote = _hardware()
    assert "loopback" in loopback_warning({"PREFECT_API_URL": API}, remote)
    assert loopback_warning({"PREFECT_API_URL": "http://10.1.2.3:4200/api"}, remote) is None
    local = _hardware('hardware.scheduler_host="127.0.0.1"')
    assert loopback_warning({"PREFECT_API_URL": API}, local) is None


@pytest.mark.parametrize(
    ("backend", "gpu_line"),
    [("pbs", "#PBS -l select=1:ncpus=2:mem=7630MB:ngpus=2"), ("lsf", '#BSUB -gpu "num=2"')],
)
def test_pbs_and_lsf_runners_build_their_job_script(tmp_path: Path, backend, gpu_line):
    hardware = _hardware(f"hardware.backend={backend}", 'hardware.scheduler_host="127.0.0.1"')
    with jobqueue_runner(hardware, tmp_path / "run-1", 0, 2, run_id="run-1", env={}) as started:
        assert started.jobs == 0 and started.artifact_key is None  # no flow run here
        assert gpu_line in started.job_script, started.job_script
        assert started.runner.address == started.cluster.scheduler_address
        assert (tmp_path / "run-1" / "cluster" / "logs").is_dir()
    markdown = job_script_markdown(started.job_script, backend, "gen", 3, 2, tmp_path)
    assert (
        "| worker jobs | 3 |" in markdown and f"```bash\n{started.job_script.rstrip()}" in markdown
    )


def test_a_job_slurm_refuses_is_a_one_line_error(slurm_cluster, tmp_path: Path):
    """A bad partition fails at once (sbatch --test-only) instead of waiting for workers."""
    hardware = _hardware('hardware.scheduler_host="127.0.0.1"', "hardware.gen.partition=nope")
    with (
        pytest.raises(ConfigError, match=r"^hardware: SLURM refuses the worker job \(.*partition"),
        jobqueue_runner(hardware, tmp_path / "run", 2, 1, env={}),
    ):
        pass
    assert slurm_cluster.job_ids() == []
    # what SLURM accepts passes the dry run and submits nothing by itself
    good = _hardware('hardware.scheduler_host="127.0.0.1"', "hardware.gen.partition=gpu")
    with jobqueue_runner(good, tmp_path / "ok", 0, 1, env={}) as started:
        dry_run_submit("slurm", started.job_script, tmp_path)
    assert slurm_cluster.job_ids() == []
