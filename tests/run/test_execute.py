"""One job executed (no server): write, skip when done, the one out-of-memory policy, the model
cache, a checkpoint that changed since the plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import priorflow.plan.spec as spec_module
import priorflow.run.execute as execute
from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.core.devices import visible_devices
from priorflow.errors import ModelError
from priorflow.models.loading import load_model
from priorflow.run.execute import run_job, run_jobs
from priorflow.store import create_store, mark_path, read_mark, run_provenance, store_path
from tests._runs import direct_trajectory, prepared_run
from tests.prefect_fixtures import tiny_world, write_run_config  # noqa: F401  (fixture)


@pytest.fixture
def plan(tiny_world, tmp_path):  # noqa: F811
    config = write_run_config(
        tmp_path / "run.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        trajectory_sizes="9",
        start_dates=["2000-01-05 12h"],
    )
    prepared = prepared_run(config, run_id="task-test")
    plan = prepared.plan
    create_store(plan.run_dir, plan, prepared.config, run_provenance())
    return plan


def test_jobs_use_every_visible_device():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    expected = [torch.device("cuda", i) for i in range(count)] or [torch.device("cpu")]
    assert visible_devices() == expected


def test_run_job_writes_the_member_of_a_direct_call_then_skips(plan, monkeypatch):
    job = plan.jobs[1]
    monkeypatch.setenv("PRIORFLOW_TORCH_THREADS", "1")
    calls = []
    record = run_job(job, str(plan.run_dir), progress=lambda i, n: calls.append((i, n)))
    assert record["skipped"] is False and record["torch_threads"] == 1
    assert (record["name"], record["size"], record["member"], record["seed"]) == (
        job.name,
        9,
        1,
        job.seed,
    )
    assert record["date"] == "2000-01-05T12" and record["device"] == "cpu" and record["finite"]
    assert calls[-1] == (plan.spec.num_steps, plan.spec.num_steps)

    direct = direct_trajectory(load_model(plan.spec.model_path), job)
    stored = zarr.open_array(str(store_path(plan.run_dir)), path=f"{job.group}/latent", mode="r")
    assert np.array_equal(stored[job.date_index, job.member], direct.latent.numpy())
    mark = read_mark(plan.run_dir, job)
    assert mark["record"].get("worker") is None  # no worker name given here

    def must_not_generate(*args, **kwargs):
        raise AssertionError("a done job was generated again")

    monkeypatch.setattr(spec_module, "generate_trajectories", must_not_generate)
    again = run_job(job, str(plan.run_dir))
    assert again["skipped"] is True
    assert {k: v for k, v in again.items() if k != "skipped"} == {
        k: v for k, v in record.items() if k != "skipped"
    }
    assert read_mark(plan.run_dir, job) == mark


def test_out_of_memory_in_the_backbone_halves_the_blanket_batch(plan, monkeypatch):
    """One policy, the core's: the job completes with the batch it could afford, and its member
    equals the one sampled with that batch from the start."""
    job = plan.jobs[0]
    assert plan.size(9).num_blankets == 3
    real = PreconditionedDenoiser.forward
    sizes = []

    def small_gpu(self, x, sigma, dates):
        sizes.append(x.shape[0])
        if x.shape[0] > 1:  # stands in for a device too small for 2 blankets at once
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, x, sigma, dates)

    monkeypatch.setattr(PreconditionedDenoiser, "forward", small_gpu)
    record = run_job(job, str(plan.run_dir), log=lambda line: None)
    assert sizes[:2] == [3, 1] and set(sizes[1:]) == {1} and record["blanket_batch"] == 1
    monkeypatch.setattr(PreconditionedDenoiser, "forward", real)
    one_by_one = direct_trajectory(load_model(plan.spec.model_path), job)
    stored = zarr.open_array(str(store_path(plan.run_dir)), path=f"{job.group}/latent", mode="r")
    np.testing.assert_allclose(stored[0, 0], one_by_one.latent.numpy(), rtol=0, atol=1e-6)


def test_other_errors_write_nothing(plan, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("not a memory problem")

    monkeypatch.setattr(spec_module, "generate_trajectories", broken)
    with pytest.raises(RuntimeError, match="not a memory problem"):
        run_job(plan.jobs[0], str(plan.run_dir))
    assert read_mark(plan.run_dir, plan.jobs[0]) is None


def test_the_model_is_loaded_once_per_process(plan, monkeypatch):
    monkeypatch.setattr(execute, "_MODELS", {})
    first = execute.cached_model(plan.spec.model_path, "best", "cpu")
    assert execute.cached_model(plan.spec.model_path, "best", "cpu") is first
    assert len(execute._MODELS) == 1


def test_a_checkpoint_changed_since_the_plan_is_refused(plan, monkeypatch):
    job = plan.jobs[0]
    changed = job.__class__(
        **{
            **vars(job),
            "spec": spec_module.SamplingSpec(**{**vars(job.spec), "checkpoint_sha256": "0" * 64}),
        }
    )
    with pytest.raises(ModelError, match="sha256 changed since the run was planned"):
        run_job(changed, str(plan.run_dir))
    assert read_mark(plan.run_dir, job) is None


def test_run_jobs_samples_members_together_and_marks_each(plan):
    """Two members in one task: one batch, each written and marked on its own, each the member
    a direct call gives (to the rounding of batched arithmetic); a lost mark regenerates only
    its member."""
    first, second = plan.jobs
    lines: list[str] = []
    records = run_jobs([first, second], str(plan.run_dir), log=lines.append)
    assert [r["name"] for r in records] == [first.name, second.name]
    assert [r["skipped"] for r in records] == [False, False]
    assert all("batch of 2" in line for line in lines)
    model = load_model(plan.spec.model_path)
    stored = zarr.open_array(str(store_path(plan.run_dir)), path=f"{first.group}/latent", mode="r")
    for job in (first, second):
        direct = direct_trajectory(model, job)
        np.testing.assert_allclose(stored[0, job.member], direct.latent.numpy(), atol=1e-5, rtol=0)
        assert read_mark(plan.run_dir, job)["record"]["batch"] == 2
    kept = read_mark(plan.run_dir, first)

    mark_path(plan.run_dir, second).unlink()
    again = run_jobs([first, second], str(plan.run_dir), log=lines.append)
    assert [r["skipped"] for r in again] == [True, False]
    assert read_mark(plan.run_dir, first) == kept
    assert read_mark(plan.run_dir, second)["record"]["batch"] == 1


def test_run_jobs_refuses_members_of_two_sizes(tiny_world, tmp_path):  # noqa: F811
    config = write_run_config(tmp_path / "run.yaml", tiny_world["model"], tiny_world["archive"])
    jobs = prepared_run(config, run_id="two-sizes").plan.jobs
    with pytest.raises(ValueError, match="one trajectory size"):
        run_jobs([jobs[0], jobs[-1]], str(tmp_path / "runs" / "two-sizes"))
