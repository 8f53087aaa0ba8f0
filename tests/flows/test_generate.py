"""The prior-generation flow against a real Prefect server and a Dask LocalCluster.

One run of the tiny world's exact model (2 sizes x 2 dates x 2 members = 8 jobs) is made once
per module; the tests then check it member by member against direct calls of the core function,
open it with xarray, read the artifacts back from the API, rerun it, and regenerate one member.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from flows.generate import generate_priors
from priorflow.models.loading import load_model
from priorflow.store import mark_path, read_mark, read_store_attrs, store_path
from priorflow.store.report import MEMBER_COLUMNS
from tests._runs import damage_members, direct_trajectory, prepared_run
from tests.prefect_fixtures import (
    copy_model_with_target,
    prefect_api,  # noqa: F401  (fixture)
    read_flow_artifacts,
    read_task_runs,
    tiny_world,  # noqa: F401  (fixture)
    write_run_config,
)

pytestmark = pytest.mark.integration


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(prefect_api, tiny_world):  # noqa: F811
    """The tiny world, with a Prefect server up."""
    return tiny_world


def generation_runs(flow_run_id, minimum: int) -> list:
    """The generation task runs of a flow run (``minimum``: all its task runs, aggregates too)."""
    return [t for t in read_task_runs(flow_run_id, minimum) if t.name.startswith("gen-")]


@pytest.fixture(scope="module")
def first_run(world, tmp_path_factory):
    config = write_run_config(
        tmp_path_factory.mktemp("flow") / "run.yaml", world["model"], world["archive"]
    )
    state = generate_priors(str(config), run_id="flow-test", return_state=True)
    return config, state


def test_flow_completes_and_returns_the_run_directory(first_run):
    config, state = first_run
    assert state.is_completed(), state.message
    run_dir = Path(state.result())
    assert run_dir == config.parent / "runs" / "flow-test"
    assert (run_dir / "config.yaml").is_file() and store_path(run_dir).is_dir()


def test_every_member_equals_a_direct_call_bit_for_bit(first_run):
    config, _ = first_run
    plan = prepared_run(config, run_id="flow-test").plan
    model = load_model(plan.spec.model_path)
    assert plan.num_jobs == 8
    torch.set_num_threads(1)  # the workers use PRIORFLOW_TORCH_THREADS (default 1)
    for job in plan.jobs:
        direct = direct_trajectory(model, job)
        ds = xr.open_zarr(store_path(plan.run_dir), group=job.group)
        stored = ds.latent.isel(start_date=job.date_index, member=job.member).values
        assert stored.dtype == np.float32
        assert np.array_equal(stored, direct.latent.numpy()), job.name
        assert np.array_equal(
            ds.timestamps.isel(start_date=job.date_index).values, direct.timestamps.numpy()
        )
        mark = read_mark(plan.run_dir, job)
        assert mark["record"]["torch_threads"] == 1 and mark["record"]["device"] == "cpu"


def test_store_opens_with_the_documented_layout(first_run):
    config, state = first_run
    plan = prepared_run(config, run_id="flow-test").plan
    for size in plan.sizes:
        ds = xr.open_zarr(store_path(plan.run_dir), group=size.group)
        T0 = size.trajectory_size
        assert size.group == f"{T0}h"
        assert ds.latent.dims == ("start_date", "member", "lead", *plan.state_dims)
        assert ds.latent.shape == (2, 2, T0, 2, 4, 8)
        assert ds.timestamps.dims == ("start_date", "lead", "field")
        assert {"start_date", "member", "lead", "valid_time"} <= set(ds.coords)
        assert ds.valid_time.dims == ("start_date", "lead")
        assert list(ds.lead.values) == list(range(T0))
        assert np.isfinite(ds.latent.values).all()
        attrs = ds.attrs
        assert attrs["states"] == T0 and attrs["dt_hours"] == 1
        assert attrs["padded_size"] == size.padded_size
        assert attrs["num_blankets"] == size.num_blankets
        assert attrs["flow_run_id"] == str(state.state_details.flow_run_id)
        assert attrs["Conventions"] == "CF-1.10"
        assert (attrs["diffusion.num_steps"], attrs["diffusion.sampler.type"]) == (5, "lms")
        assert attrs["diffusion.sampler.config.grid"] == "uniform"
        assert attrs["diffusion.sampler.config.order"] == 3
        assert attrs["seed"] == 7 and attrs["blanket_overlap"] == 1
        assert len(attrs["checkpoint_sha256"]) == 64
        assert {"prefect", "prefect-dask", "torch"} <= {
            key.removeprefix("package_versions.") for key in attrs
        }
        assert ds.valid_time.dtype == np.dtype("datetime64[ns]")
        assert attrs["aggregated"] is True
        assert ds.member_finite.values.all()
        assert np.isfinite(ds.member_seconds.values).all()


def test_artifacts_have_the_documented_content(first_run):
    config, state = first_run
    plan = prepared_run(config, run_id="flow-test").plan
    artifacts = read_flow_artifacts(state.state_details.flow_run_id)
    by_key = {a.key: a for a in artifacts if a.key}
    store = str(store_path(plan.run_dir).resolve())
    for size in plan.sizes:
        table = by_key[f"priorflow-flow-test-{size.group}-members"]
        assert table.type == "table"
        rows = table.data if isinstance(table.data, list) else json.loads(table.data)
        assert len(rows) == 4
        assert all(tuple(row) == MEMBER_COLUMNS for row in rows)
        seeds = {int(row["seed"]) for row in rows}
        assert seeds == {job.seed for job in size.jobs}
        assert all(row["device"] == "cpu" and row["finite"] is True for row in rows)
        report = by_key[f"priorflow-flow-test-{size.group}-report"]
        assert report.type == "markdown"
        for text in ("## Config", "## Plan", "## Timings", "## Store", store, "lms"):
            assert text in report.data
        assert f"| {size.group} | {size.trajectory_size} | {size.padded_size} |" in report.data
        link = by_key[f"priorflow-flow-test-{size.group}-store"]
        assert Path(store).as_uri() in link.data
        assert f"`{store}`" in link.description  # the path as text: file:// does not open
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == plan.num_jobs
    assert all(float(a.data) == 100.0 for a in progress)
    assert {a.key for a in progress} == {
        f"priorflow-flow-test-{job.name.lower()}-progress" for job in plan.jobs
    }


def test_task_runs_are_named_per_job(first_run):
    config, state = first_run
    plan = prepared_run(config, run_id="flow-test").plan
    runs = generation_runs(state.state_details.flow_run_id, minimum=10)
    assert sorted(t.name for t in runs) == sorted(job.name for job in plan.jobs)
    assert all(t.state.is_completed() for t in runs)


def test_rerun_does_no_generation_and_keeps_every_byte(first_run):
    config, _ = first_run
    run_dir = config.parent / "runs" / "flow-test"
    before = tree_digest(run_dir)
    state = generate_priors(str(config), run_id="flow-test", return_state=True)
    assert state.is_completed(), state.message
    assert generation_runs(state.state_details.flow_run_id, minimum=2) == []  # 2 aggregates
    assert tree_digest(run_dir) == before


def test_a_deleted_mark_regenerates_exactly_that_member(first_run):
    config, _ = first_run
    plan = prepared_run(config, run_id="flow-test").plan
    job = plan.jobs[5]
    store = store_path(plan.run_dir)
    before = tree_digest(store)
    others = {j.name: mark_path(plan.run_dir, j).read_bytes() for j in plan.jobs if j != job}
    old_mark = read_mark(plan.run_dir, job)
    mark_path(plan.run_dir, job).unlink()

    state = generate_priors(str(config), run_id="flow-test", return_state=True)
    assert state.is_completed(), state.message
    assert [t.name for t in generation_runs(state.state_details.flow_run_id, minimum=3)] == [
        job.name
    ]
    new_mark = read_mark(plan.run_dir, job)
    assert new_mark["sha256"] == old_mark["sha256"]  # the same seed gives the same member
    assert {j.name: mark_path(plan.run_dir, j).read_bytes() for j in plan.jobs if j != job} == (
        others
    )
    latent = [k for k in before if "/latent/c/" in k]
    assert latent and {k: v for k, v in tree_digest(store).items() if k in latent} == {
        k: before[k] for k in latent
    }


def test_a_rerun_regenerates_exactly_the_damaged_members(first_run):
    """Attack: after the run finished, a chunk is deleted, one zeroed, two swapped. Before, a
    rerun said "unchanged"; now it generates exactly those members again, as they were."""
    config, _ = first_run
    plan = prepared_run(config, run_id="flow-test").plan
    group = plan.sizes[0].group
    store = store_path(plan.run_dir)
    before = tree_digest(store)
    hit = damage_members(plan.run_dir, group)
    damaged = sorted(j.name for j in plan.sizes[0].jobs if (j.date_index, j.member) in hit)
    others = {j.name: mark_path(plan.run_dir, j).read_bytes() for j in plan.jobs}
    others = {name: mark for name, mark in others.items() if name not in damaged}

    state = generate_priors(str(config), run_id="flow-test", return_state=True)
    assert state.is_completed(), state.message
    runs = generation_runs(state.state_details.flow_run_id, minimum=len(damaged) + 2)
    assert sorted(t.name for t in runs) == damaged
    latent = [k for k in before if "/latent/c/" in k]
    assert {k: v for k, v in tree_digest(store).items() if k in latent} == {
        k: before[k] for k in latent
    }  # the same seeds give the same members, byte for byte
    assert {
        n: mark_path(plan.run_dir, j).read_bytes() for j in plan.jobs if (n := j.name) in others
    } == others


def test_a_worker_killed_by_a_member_takes_down_only_that_member(world, tmp_path):
    """Attack: a member whose backbone kills its worker process. Before, Dask failed every job
    queued on that worker with KilledWorker, members that never started included; now only the
    members that kill it fail (after Dask's bounded restarts), the others complete."""
    model = copy_model_with_target(
        world["model"],
        tmp_path / "killing-model",
        "tests.prefect_fixtures:KillingBackbone",
        fail_day=10,
    )
    config = write_run_config(
        tmp_path / "run.yaml",
        model,
        world["archive"],
        trajectory_sizes="6",
        num_samples_per_date=2,
        start_dates=["2000-01-10 6h", "2000-01-03 0h", "2000-01-04 0h"],
    )
    state = generate_priors(str(config), run_id="killing", return_state=True)
    assert state.is_failed()
    plan = prepared_run(config, run_id="killing").plan
    killers = [job for job in plan.jobs if job.start.day == 10]
    assert len(killers) == 2 and "KilledWorker" in (state.message or "")
    for job in plan.jobs:
        assert (read_mark(plan.run_dir, job) is None) == (job in killers), job.name
    assert "2 of 6 members missing" in (state.message or "")


def test_a_failing_member_fails_the_flow_and_names_it(world, tmp_path):
    model = copy_model_with_target(
        world["model"],
        tmp_path / "failing-model",
        "tests.prefect_fixtures:FailingBackbone",
        fail_day=10,
    )
    config = write_run_config(
        tmp_path / "run.yaml",
        model,
        world["archive"],
        trajectory_sizes="6",
        num_samples_per_date=1,
    )
    state = generate_priors(str(config), run_id="failing", return_state=True)
    assert state.is_failed()
    message = state.message or ""
    with pytest.raises(Exception) as raised:
        state.result()
    text = str(raised.value)
    assert "gen-6h-2000-01-10T06-m0" in text and "gen-6h-2000-01-03T00-m0" not in text
    assert "1 of 2 members missing" in text and "injected failure" in text
    assert "MissingMembersError" in message or "members missing" in message
    plan = prepared_run(config, run_id="failing").plan
    ok, bad = plan.jobs
    assert read_mark(plan.run_dir, ok) is not None and read_mark(plan.run_dir, bad) is None
    runs = {t.name: t for t in generation_runs(state.state_details.flow_run_id, minimum=2)}
    assert runs[bad.name].state.is_failed() and runs[bad.name].run_count == 3  # 2 retries
    assert runs[ok.name].state.is_completed()
    assert not xr.open_zarr(store_path(plan.run_dir), group="6h").attrs["aggregated"]


def test_a_config_error_fails_the_flow_with_its_one_line_message(world, tmp_path):
    config = write_run_config(
        tmp_path / "run.yaml", world["model"], world["archive"], blanket_overlap=7
    )
    state = generate_priors(str(config), run_id="bad-config", return_state=True)
    assert state.is_failed()
    assert "blanket_overlap: 7" in state.message
    assert not (tmp_path / "runs").exists()


def test_a_loaded_config_is_not_read_again(world, tmp_path):
    """``priorflow run`` reads the config once and hands the flow the loaded one: the flow
    reads no file, so a config that changed or disappeared after loading does not matter."""
    from flows.run_config import load_run_config

    path = write_run_config(
        tmp_path / "run.yaml",
        world["model"],
        world["archive"],
        trajectory_sizes="6",
        num_samples_per_date=1,
        start_dates=["2000-01-03 0h"],
    )
    config = load_run_config(path, ["diffusion.num_steps=3"], "loaded-once")
    path.unlink()
    state = generate_priors(config=config, return_state=True)
    assert state.is_completed(), state.message
    run_dir = Path(state.result())
    assert run_dir == tmp_path / "runs" / "loaded-once"
    assert read_store_attrs(store_path(run_dir))["diffusion"]["num_steps"] == 3


def test_members_per_task_batches_members_and_resumes_each(world, tmp_path):
    """``members_per_task: 2``: 6 members of one size in 3 task runs, each named by its first
    member and how many more; every member marked on its own and equal to a direct call (to the
    rounding of batched arithmetic); a lost mark regenerates only its member, in a task of one."""
    config = write_run_config(
        tmp_path / "run.yaml",
        world["model"],
        world["archive"],
        trajectory_sizes="9",
        num_samples_per_date=3,
        members_per_task=2,
    )
    state = generate_priors(str(config), run_id="batched", return_state=True)
    assert state.is_completed(), state.message
    plan = prepared_run(config, run_id="batched").plan
    runs = generation_runs(state.state_details.flow_run_id, minimum=4)
    jobs = plan.jobs
    assert sorted(t.name for t in runs) == sorted(f"{jobs[i].name}+1" for i in (0, 2, 4))
    model = load_model(plan.spec.model_path)
    torch.set_num_threads(1)
    ds = xr.open_zarr(store_path(plan.run_dir), group="9h")
    for job in jobs:
        stored = ds.latent.isel(start_date=job.date_index, member=job.member).values
        direct = direct_trajectory(model, job).latent.numpy()
        np.testing.assert_allclose(stored, direct, rtol=0, atol=1e-5, err_msg=job.name)
        assert read_mark(plan.run_dir, job)["record"]["batch"] == 2
    assert ds.attrs["members_per_task"] == 2

    lost = jobs[3]
    others = {j.name: mark_path(plan.run_dir, j).read_bytes() for j in jobs if j != lost}
    mark_path(plan.run_dir, lost).unlink()
    state = generate_priors(str(config), run_id="batched", return_state=True)
    assert state.is_completed(), state.message
    runs = generation_runs(state.state_details.flow_run_id, minimum=2)
    assert [t.name for t in runs] == [lost.name]
    assert {j.name: mark_path(plan.run_dir, j).read_bytes() for j in jobs if j != lost} == others
