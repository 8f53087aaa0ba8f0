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


def allocation_faults(tune: bool) -> tuple[str | None, int]:
    """In the calling process: minor page faults of 200 allocations of a 1 MiB tensor, after
    ``tune_allocator`` or not; and the worker's ``MALLOC_TRIM_THRESHOLD_``."""
    import os
    import resource

    from priorflow.run.environment import tune_allocator

    if tune:
        assert tune_allocator()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        tensor = torch.empty(1 << 18)
        tensor.fill_(1.0)
        del tensor
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), resource.getrusage(
        resource.RUSAGE_SELF
    ).ru_minflt - before


@pytest.mark.integration
def test_a_job_in_a_dask_worker_keeps_its_tensors_on_the_heap():
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, and every 1 MiB tensor
    was mapped and unmapped again (one page fault per 4 kB: sampling took twice as long). The
    tuning a job applies (run_job calls tune_allocator) brings the faults down to heap reuse."""
    from distributed import Client

    from flows.runners import local_cluster

    with local_cluster(n_workers=1) as cluster, Client(cluster) as client:
        trim, untuned = client.submit(allocation_faults, False, pure=False).result()
        _, tuned = client.submit(allocation_faults, True, pure=False).result()
    assert trim == "65536"  # the environment that caused it is still Dask's
    assert untuned > 200 * 200  # about 256 faults per tensor
    assert tuned < untuned / 10, (tuned, untuned)


def test_run_job_tunes_the_allocator_before_sampling(monkeypatch):
    import priorflow.run.execute as execute

    calls = []
    monkeypatch.setattr(execute, "tune_allocator", lambda: calls.append("tuned"))
    monkeypatch.setattr(execute, "read_mark", lambda *a: None)
    monkeypatch.setattr(
        execute, "cached_model", lambda *a: (_ for _ in ()).throw(RuntimeError("stop"))
    )

    from types import SimpleNamespace

    Job = SimpleNamespace(
        name="j", size=6, spec=SimpleNamespace(model_path="m", model_target="best")
    )

    with pytest.raises(RuntimeError, match="stop"):
        execute.run_job(Job, "nowhere")
    assert calls == ["tuned"]
