"""The generation task's body (no server): write, skip when done, out-of-memory retry, keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import priorflow.core.generate
import tasks.generate as task_module
from priorflow.run.prepare import prepare_run
from priorflow.models.loading import load_model
from priorflow.store import create_store, read_mark, run_provenance, store_path
from tasks.generate import GenerationSettings, ProgressReporter, job_devices, run_job
from tasks.keys import artifact_key
from tests.prefect_fixtures import tiny_world, write_run_config  # noqa: F401  (fixture)


@pytest.fixture
def run(tiny_world, tmp_path):  # noqa: F811
    config = write_run_config(
        tmp_path / "run.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        trajectory_sizes="9",
        start_dates=["2000-01-05 12h"],
    )
    prepared = prepare_run(config, run_id="task-test")
    plan = prepared.plan
    create_store(plan.run_dir, plan, prepared.config, prepared.card, run_provenance())
    return plan, GenerationSettings.from_plan(plan)


def test_artifact_keys_are_lowercase_letters_digits_and_dashes():
    assert artifact_key("priorflow", "Run_1", "72h", "members") == "priorflow-run-1-72h-members"
    assert artifact_key("x", "gen-72h-2000-04-03T00-m1", "") == "x-gen-72h-2000-04-03t00-m1"
    assert artifact_key("a..b", "--c--") == "a-b-c"


def test_settings_reproduce_the_plan_arguments(run):
    plan, settings = run
    for job in plan.jobs:
        assert settings.generate_kwargs(job) == plan.generate_kwargs(job)


def test_job_devices_on_this_machine():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    expected = [f"cuda:{i}" for i in range(count)] or ["cpu"]  # every visible device
    assert job_devices(1) == expected and job_devices(0) == expected


def test_run_job_writes_the_member_of_a_direct_call_then_skips(run, monkeypatch):
    plan, settings = run
    job = plan.jobs[1]
    monkeypatch.setenv("PRIORFLOW_TORCH_THREADS", "1")
    calls = []
    record = run_job(job, str(plan.run_dir), settings, progress=lambda i, n: calls.append((i, n)))
    assert record["skipped"] is False and record["torch_threads"] == 1
    assert (record["name"], record["size"], record["member"], record["seed"]) == (
        job.name,
        9,
        1,
        job.seed,
    )
    assert record["date"] == "2000-01-05T12" and record["device"] == "cpu" and record["finite"]
    assert calls[-1] == (plan.steps, plan.steps)

    direct = priorflow.core.generate.generate_trajectory(
        load_model(plan.model_path), **plan.generate_kwargs(job), devices=["cpu"]
    )
    import zarr

    stored = zarr.open_array(str(store_path(plan.run_dir)), path=f"{job.group}/latent", mode="r")
    assert np.array_equal(stored[job.date_index, job.member], direct.latent.numpy())
    mark = read_mark(plan.run_dir, job)
    assert mark["record"]["worker"] is None  # not on a Dask worker here

    def must_not_generate(*args, **kwargs):
        raise AssertionError("a done job was generated again")

    monkeypatch.setattr(priorflow.core.generate, "generate_trajectory", must_not_generate)
    again = run_job(job, str(plan.run_dir), settings)
    assert again["skipped"] is True
    assert {k: v for k, v in again.items() if k != "skipped"} == {
        k: v for k, v in record.items() if k != "skipped"
    }
    assert read_mark(plan.run_dir, job) == mark


def test_an_escaping_out_of_memory_error_halves_the_blanket_batch(run, monkeypatch):
    plan, settings = run
    job = plan.jobs[0]
    assert plan.size(9).num_blankets == 3
    real = priorflow.core.generate.generate_trajectory
    batches = []

    def small_gpu(model, *args, blanket_batch=None, **kwargs):
        batches.append(blanket_batch)
        if blanket_batch > 1:  # stands in for a CUDA device too small for 2 blankets
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, *args, blanket_batch=blanket_batch, **kwargs)

    monkeypatch.setattr(priorflow.core.generate, "generate_trajectory", small_gpu)
    logged = []
    record = run_job(job, str(plan.run_dir), settings, log=logged.append)
    assert batches == [3, 1] and record["blanket_batch"] == 1
    assert any("blanket_batch=1" in line for line in logged)


def test_other_errors_are_not_retried_inside_the_task(run, monkeypatch):
    plan, settings = run

    def broken(*args, **kwargs):
        raise RuntimeError("not a memory problem")

    monkeypatch.setattr(priorflow.core.generate, "generate_trajectory", broken)
    with pytest.raises(RuntimeError, match="not a memory problem"):
        run_job(plan.jobs[0], str(plan.run_dir), settings)
    assert read_mark(plan.run_dir, plan.jobs[0]) is None


def test_the_model_is_loaded_once_per_process(run, monkeypatch):
    _, settings = run
    monkeypatch.setattr(task_module, "_MODELS", {})
    first = task_module.cached_model(settings.model_path, "best", "cpu")
    assert task_module.cached_model(settings.model_path, "best", "cpu") is first
    assert len(task_module._MODELS) == 1


def test_progress_reports_every_five_percent(monkeypatch):
    updates = []
    monkeypatch.setattr(task_module, "create_progress_artifact", lambda *a, **k: "id")
    monkeypatch.setattr(
        task_module, "update_progress_artifact", lambda i, p, **k: updates.append(p)
    )
    reporter = ProgressReporter(key="k", description="d")
    for step in range(1, 101):
        reporter(step, 100)
    assert updates == [float(p) for p in range(5, 101, 5)]
    updates.clear()
    reporter = ProgressReporter(key="k", description="d")
    for step in range(1, 4):
        reporter(step, 3)
    assert updates == pytest.approx([100 / 3, 200 / 3, 100.0])
