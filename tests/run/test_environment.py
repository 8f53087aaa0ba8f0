"""What a job reads from its process environment: GPUs, batch job, threads, forwarded variables."""

from __future__ import annotations

import pytest
import torch

from priorflow.errors import ConfigError
from priorflow.run.environment import (
    forwarded_env,
    gpu_ids_from_env,
    pin_torch_threads,
    slurm_job_id,
    torch_threads,
)

API = "http://127.0.0.1:4200/api"


def test_environment_readers():
    assert gpu_ids_from_env({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_GPUS": "2,3"}) == [
        "0",
        "1",
    ]
    assert gpu_ids_from_env({"SLURM_JOB_GPUS": "2,3"}) == ["2", "3"]
    assert gpu_ids_from_env({"CUDA_VISIBLE_DEVICES": "", "SLURM_JOB_GPUS": "1"}) == []
    assert gpu_ids_from_env({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == []
    assert gpu_ids_from_env({"CUDA_VISIBLE_DEVICES": "GPU-1a2b, MIG-3c"}) == ["GPU-1a2b", "MIG-3c"]
    assert gpu_ids_from_env({}) == []
    assert slurm_job_id({"SLURM_JOB_ID": "17"}) == "17"
    assert slurm_job_id({"SLURM_JOBID": "18"}) == "18"
    assert slurm_job_id({"PBS_JOBID": "1.pbs"}) is None
    env = {
        "PREFECT_API_URL": API,
        "PRIORFLOW_TORCH_THREADS": "2",
        "DO_NOT_TRACK": "1",
        "HOME": "/r",
    }
    assert forwarded_env(env) == {
        "DO_NOT_TRACK": "1",
        "PREFECT_API_URL": API,
        "PRIORFLOW_TORCH_THREADS": "2",
    }


def test_torch_threads_from_the_environment(monkeypatch):
    monkeypatch.delenv("PRIORFLOW_TORCH_THREADS", raising=False)
    assert torch_threads() == 1 and torch_threads(default=3) == 3
    monkeypatch.setenv("PRIORFLOW_TORCH_THREADS", "4")
    assert torch_threads() == 4
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("PRIORFLOW_TORCH_THREADS", bad)
        with pytest.raises(ConfigError, match="PRIORFLOW_TORCH_THREADS"):
            torch_threads()
    monkeypatch.delenv("PRIORFLOW_TORCH_THREADS")
    assert torch_threads(1, {"PRIORFLOW_TORCH_THREADS": "2"}) == 2
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("PRIORFLOW_TORCH_THREADS", "2")
        assert pin_torch_threads([torch.device("cpu")]) == 2
    finally:
        torch.set_num_threads(before)
