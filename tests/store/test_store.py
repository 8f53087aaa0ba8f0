"""The output store: schema first, region writes, done marks, resume checks, aggregation."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from priorflow.config import load_config
from priorflow.core.dates import timestamps as state_timestamps
from priorflow.errors import ConfigError
from priorflow.plan import SamplingSpec
from priorflow.store import (
    CONFIG_NAME,
    StoreError,
    aggregate,
    create_store,
    has_store,
    is_done,
    mark_path,
    missing_jobs,
    open_group,
    read_marks,
    read_store_attrs,
    run_provenance,
    store_path,
    write_member,
)
from tests._runs import small_run, tree_hashes


def latent_of(job) -> np.ndarray:
    """A member's trajectory: deterministic noise from the job's seed, shape (T0, 2, 3, 4)."""
    rng = np.random.default_rng(job.seed)
    return rng.standard_normal((job.size, 2, 3, 4)).astype(np.float32) + job.member


def record_of(job) -> dict:
    return {"seconds": 1.5 + job.member, "device": "cpu", "host": "here", "steps": 64}


@pytest.fixture
def run(tmp_path: Path):
    config, card, plan = small_run(tmp_path, checkpoint_sha256="ab" * 32)
    provenance = run_provenance(flow_run_id="flow-1")
    create_store(plan.run_dir, plan, config, provenance)
    return config, card, plan


def write_all(plan, order=None) -> None:
    jobs = plan.jobs if order is None else [plan.jobs[i] for i in order]
    for job in jobs:
        write_member(plan.run_dir, job, torch.from_numpy(latent_of(job)), record_of(job))


def test_schema_before_any_write(run):
    config, _card, plan = run
    store = store_path(plan.run_dir)
    assert not [p for p in store.glob("*/latent/**/*") if p.is_file() and p.name != "zarr.json"]
    for size in plan.sizes:
        ds = xr.open_zarr(store, group=size.group)
        T0 = size.trajectory_size
        assert ds.latent.dims == ("start_date", "member", "lead", *plan.state_dims)
        assert ds.latent.shape == (2, 2, T0, 2, 3, 4) and ds.latent.dtype == np.float32
        assert ds.latent.encoding["chunks"] == (1, 1, T0, 2, 3, 4)
        assert np.isnan(ds.latent.values).all()
        assert ds.timestamps.dims == ("start_date", "lead", "field")
        assert ds.timestamps.dtype == np.int64
        for d, start in enumerate(plan.start_dates):
            assert (ds.timestamps.values[d] == state_timestamps(start, T0, 1).numpy()).all()
        assert set(ds.coords) == {"start_date", "member", "lead", "valid_time"}
        assert list(ds.start_date.values) == [np.datetime64(d, "ns") for d in plan.start_dates]
        assert list(ds.member.values) == [0, 1]
        assert list(ds.lead.values) == list(range(T0)) and ds.lead.attrs["units"] == "hours"
        assert ds.valid_time.dims == ("start_date", "lead")
        assert ds.valid_time.values[1, 3] == np.datetime64("2000-04-20T15:00", "ns")
        assert ds.seed.values.tolist() == [
            [j.seed for j in size.jobs[:2]],
            [j.seed for j in size.jobs[2:]],
        ]
        attrs = ds.attrs
        assert (attrs["states"], attrs["dt_hours"], attrs["span_hours"]) == (T0, 1, T0)
        assert (attrs["padded_size"], attrs["num_blankets"]) == (
            size.padded_size,
            size.num_blankets,
        )
        # the sampling spec, once, under the run config's own key names, as plain attributes
        assert attrs["diffusion.num_steps"] == 64 and attrs["diffusion.sampler.type"] == "lms"
        assert attrs["diffusion.sampler.config.grid"] == "uniform"
        assert attrs["diffusion.sampler.config.order"] == 3
        assert not [key for key, value in attrs.items() if isinstance(value, dict) and value]
        assert attrs["card.blanket_size"] == 8 and attrs["card.state_shape"] == [2, 3, 4]
        assert attrs["package_versions.zarr"] == zarr.__version__
        assert (attrs["blanket_overlap"], attrs["fold_mode"]) == (4, "symmetrical")
        assert (attrs["precision"], attrs["seed"], attrs["flow_run_id"]) == (
            "float16",
            0,
            "flow-1",
        )
        assert attrs["checkpoint_sha256"] == "ab" * 32
        assert attrs["model_path"] == config.model_path and attrs["start_time"]
        assert attrs["aggregated"] is False and attrs["end_time"] is None
        # priorflow reads them back nested, exactly as the spec wrote them
        nested = open_group(plan.run_dir, size.group).attrs
        assert nested["diffusion"] == {
            "num_steps": 64,
            "sampler": {"type": "lms", "config": {"grid": "uniform", "order": 3}},
        }
        assert nested["card"]["blanket_size"] == 8 and "zarr" in nested["package_versions"]
        assert SamplingSpec.from_attrs(nested) == plan.spec
    assert [s.group for s in plan.sizes] == ["10h", "12h"]
    saved = load_config(plan.run_dir / CONFIG_NAME)
    assert saved.model_dump() == config.model_dump()
    assert not list(plan.run_dir.glob(".prior.zarr.partial-*"))


def test_the_store_opens_with_cf_attributes_and_decoded_times(run):
    """What an xarray user sees: CF conventions, datetime64 times, units and standard names."""
    _config, _card, plan = run
    store = store_path(plan.run_dir)
    assert xr.open_zarr(store).attrs["Conventions"] == "CF-1.10"
    ds = xr.open_zarr(store, group="10h")
    assert ds.attrs["Conventions"] == "CF-1.10"
    assert ds.valid_time.dtype == np.dtype("datetime64[ns]")
    assert ds.valid_time.values[0, 0] == np.datetime64("2000-04-03T00:00", "ns")
    assert ds.start_date.dtype == np.dtype("datetime64[ns]")
    expected = {
        "start_date": ("forecast_reference_time", None),
        "member": ("realization", "1"),
        "lead": ("forecast_period", "hours"),
        "valid_time": ("time", None),
    }
    for name, (standard_name, units) in expected.items():
        assert ds[name].attrs["standard_name"] == standard_name, name
        assert ds[name].attrs.get("units") == units, name
        assert ds[name].attrs["long_name"], name
    for name in ds.data_vars:
        assert ds[name].attrs["long_name"], name
    assert ds.latent.attrs["units"] == "1" and ds.member_seconds.attrs["units"] == "s"
    # the times are stored as CF says, so any CF reader decodes them (not only xarray)
    raw = json.loads((store / "10h" / "valid_time" / "zarr.json").read_text())
    assert raw["data_type"] == "int64"
    assert raw["attributes"]["units"] == "hours since 1970-01-01"
    assert raw["attributes"]["calendar"] == "proleptic_gregorian"


def test_resume_refuses_a_store_of_the_previous_schema_in_one_line(run):
    """A store made by the priorflow of schema 2 (nested attributes) is not resumed."""
    config, _card, plan = run
    root = store_path(plan.run_dir) / "zarr.json"
    meta = json.loads(root.read_text())
    old = read_store_attrs(store_path(plan.run_dir))
    old["priorflow_schema"]["version"] = 2
    root.write_text(json.dumps(meta | {"attributes": old}))
    before = tree_hashes(plan.run_dir)
    with pytest.raises(StoreError) as caught:
        create_store(plan.run_dir, plan, config, run_provenance())
    message = str(caught.value)
    assert "has schema version 2, this priorflow writes 3" in message and "\n" not in message
    assert tree_hashes(plan.run_dir) == before


@pytest.mark.parametrize("order", [None, [7, 0, 5, 2, 3, 6, 1, 4]])
def test_region_writes_in_any_order_equal_the_inputs(run, order):
    _, _, plan = run
    first = plan.jobs[1]
    write_member(plan.run_dir, first, latent_of(first), record_of(first))
    ds = open_group(plan.run_dir, first.group)
    assert np.array_equal(ds.latent.values[0, 1], latent_of(first))
    assert np.isnan(ds.latent.values[0, 0]).all() and np.isnan(ds.latent.values[1]).all()
    write_all(plan, order)
    for size in plan.sizes:
        ds = open_group(plan.run_dir, size.group)
        for job in size.jobs:
            assert np.array_equal(ds.latent.values[job.date_index, job.member], latent_of(job))


def test_done_mark_after_the_write(run):
    _, _, plan = run
    job = plan.jobs[2]
    assert not is_done(plan.run_dir, job)
    with pytest.raises(ValueError, match="shape"):
        write_member(plan.run_dir, job, np.zeros((3, 2, 3, 4)), record_of(job))
    assert not is_done(plan.run_dir, job)  # a failed write leaves no mark
    mark = write_member(plan.run_dir, job, latent_of(job), record_of(job) | {"finite": np.True_})
    assert is_done(plan.run_dir, job)
    on_disk = json.loads(mark_path(plan.run_dir, job).read_text())
    assert on_disk == mark
    assert (mark["name"], mark["seed"], mark["member"], mark["size"]) == (
        job.name,
        job.seed,
        job.member,
        job.size,
    )
    assert mark["record"] == record_of(job) | {"finite": True}
    assert mark["mean"] == pytest.approx(float(latent_of(job).astype(np.float64).mean()))
    assert len(mark["sha256"]) == 64
    assert [m["name"] for m in read_marks(plan.run_dir)] == [job.name]
    assert not list(mark_path(plan.run_dir, job).parent.glob(".*tmp*"))


def test_a_job_of_another_run_is_refused(run, tmp_path):
    _, _, plan = run
    _, _, other = small_run(tmp_path / "other", "seed=5")
    with pytest.raises(StoreError, match="not of this run"):
        write_member(plan.run_dir, other.jobs[0], latent_of(other.jobs[0]), {})
    assert not is_done(plan.run_dir, other.jobs[0])


def test_missing_jobs_and_deleted_marks(run):
    _, _, plan = run
    assert missing_jobs(plan.run_dir, plan) == plan.jobs
    write_all(plan)
    assert missing_jobs(plan.run_dir, plan) == []
    gone = plan.jobs[5]
    mark_path(plan.run_dir, gone).unlink()
    assert missing_jobs(plan.run_dir, plan) == [gone]


def test_resume_accepts_the_same_run_and_keeps_every_byte(run):
    _config, _card, plan = run
    write_all(plan, [0, 1])
    before = tree_hashes(plan.run_dir)
    # hardware and provenance (flow run id, start time) may change on a resume
    config2, _, plan2 = small_run(plan.run_dir.parent.parent, "hardware.gen.cpus=2")
    create_store(plan2.run_dir, plan2, config2, run_provenance(flow_run_id="flow-2"))
    assert tree_hashes(plan.run_dir) == before


@pytest.mark.parametrize(
    ("override", "label"),
    [
        ("diffusion.num_steps=32", "diffusion.num_steps = 64, this config gives 32"),
        ("num_samples_per_date=3", "num_samples_per_date = 2, this config gives 3"),
        ('trajectory_sizes="10"', "trajectory_sizes"),
        ('start_dates=["2000-04-03 0h"]', "start_dates"),
        ("seed=1", "seed = 0, this config gives 1"),
        ("blanket_overlap=2", "blanket_overlap"),
        ("precision=float32", "precision"),
        ("fold_mode=average", "fold_mode"),
        ("diffusion.sampler.config.order=2", "diffusion.sampler.config"),
        ("model_target=last", "model_target"),
    ],
)
def test_resume_refuses_a_config_that_changes_the_store(run, override, label):
    _, _card, plan = run
    write_all(plan, [0])
    before = tree_hashes(plan.run_dir)
    config2, _, plan2 = small_run(
        plan.run_dir.parent.parent, override, checkpoint_sha256="ab" * 32
    )
    with pytest.raises(ConfigError) as caught:
        create_store(plan2.run_dir, plan2, config2, run_provenance())
    message = str(caught.value)
    assert message.startswith("run_id 'test-run': ") and label in message and "\n" not in message
    assert "use a new run_id" in message
    assert tree_hashes(plan.run_dir) == before


def test_resume_refuses_another_checkpoint(run):
    config, _card, plan = run
    _, _, other = small_run(plan.run_dir.parent.parent, checkpoint_sha256="cd" * 32)
    with pytest.raises(ConfigError, match=r"made with checkpoint_sha256 = \"abab"):
        create_store(plan.run_dir, other, config, run_provenance())


def test_resume_refuses_the_same_checkpoint_under_another_card(run):
    """The model is its card and its checkpoint: another sigma_max is another model."""
    config, card, plan = run
    changed = card.model_copy(
        update={"schedule": card.schedule.model_copy(update={"sigma_max": 20.0})}
    )
    _, _, other = small_run(plan.run_dir.parent.parent, card=changed, checkpoint_sha256="ab" * 32)
    with pytest.raises(
        ConfigError, match=r"card.schedule.sigma_max = 1000.0, this config gives 20.0"
    ):
        create_store(plan.run_dir, other, config, run_provenance())


def test_aggregate_verifies_and_summarises(run):
    _, _, plan = run
    write_all(plan, [0, 1, 2])
    with pytest.raises(StoreError) as caught:
        aggregate(plan.run_dir, "10h")
    assert str(caught.value).startswith(
        "10h: 1 of 4 members are not done (gen-10h-2000-04-20T12-m1)"
    )
    write_all(plan, [3, 4, 5, 6, 7])
    summary = aggregate(plan.run_dir, 10)
    size = plan.size("10h")
    values = np.stack([latent_of(job) for job in size.jobs]).astype(np.float64)
    assert (
        summary["members"] == 4 and summary["non_finite"] == [] and summary["unchanged"] is False
    )
    assert summary["mean"] == pytest.approx(values.mean())
    assert summary["std"] == pytest.approx(values.std())
    assert (summary["min"], summary["max"]) == (
        pytest.approx(values.min()),
        pytest.approx(values.max()),
    )
    assert summary["seconds"] == pytest.approx(1.5 + 2.5 + 1.5 + 2.5)
    ds = xr.open_zarr(store_path(plan.run_dir), group="10h")  # consolidated metadata is current
    assert ds.attrs["aggregated"] is True and ds.attrs["end_time"]
    assert ds.attrs["summary.mean"] == pytest.approx(values.mean())
    for job in size.jobs:
        member = values[job.date_index * 2 + job.member]
        at = {"start_date": job.date_index, "member": job.member}
        assert float(ds.member_mean[at]) == pytest.approx(member.mean())
        assert float(ds.member_std[at]) == pytest.approx(member.std())
        assert float(ds.member_min[at]) == pytest.approx(member.min())
        assert float(ds.member_max[at]) == pytest.approx(member.max())
        assert bool(ds.member_finite[at]) is True
        assert float(ds.member_seconds[at]) == 1.5 + job.member
    assert not open_group(plan.run_dir, "12h").attrs["aggregated"]  # only that size


def test_aggregate_reports_non_finite_members(run):
    _, _, plan = run
    write_all(plan)
    job = plan.size(12).jobs[1]
    bad = latent_of(job)
    bad[3, 0, 0, 0] = np.inf
    write_member(plan.run_dir, job, bad, record_of(job))
    summary = aggregate(plan.run_dir, "12h")
    assert summary["non_finite"] == [job.name]
    assert bool(open_group(plan.run_dir, 12).member_finite[0, 1]) is False


def test_aggregate_catches_data_that_does_not_match_its_mark(run):
    _, _, plan = run
    write_all(plan)
    job = plan.jobs[6]
    latent = zarr.open_array(str(store_path(plan.run_dir)), path=f"{job.group}/latent", mode="r+")
    latent[job.date_index, job.member, 0] = 0.0  # written behind the mark's back
    with pytest.raises(StoreError, match=f"^{job.name}: its data does not match its done mark"):
        aggregate(plan.run_dir, job.group)


def test_rerunning_a_finished_run_leaves_the_bytes_identical(run):
    config, _card, plan = run
    write_all(plan)
    for size in plan.sizes:
        aggregate(plan.run_dir, size.group)
    before = tree_hashes(plan.run_dir)
    # the flow again: create (resume), skip done jobs, aggregate
    create_store(plan.run_dir, plan, config, run_provenance(checkpoint_sha256="ab" * 32))
    assert missing_jobs(plan.run_dir, plan) == []
    assert all(aggregate(plan.run_dir, size.group)["unchanged"] for size in plan.sizes)
    assert tree_hashes(plan.run_dir) == before
    # writing a done member again with the same data and record changes no byte either
    job = plan.jobs[4]
    write_member(plan.run_dir, job, latent_of(job), record_of(job))
    assert tree_hashes(plan.run_dir) == before


def test_regenerating_one_member_reaggregates(run):
    _, _, plan = run
    write_all(plan)
    first = aggregate(plan.run_dir, "10h")
    job = plan.jobs[0]
    mark_path(plan.run_dir, job).unlink()
    assert missing_jobs(plan.run_dir, plan) == [job]
    with pytest.raises(StoreError, match=job.name):
        aggregate(plan.run_dir, "10h")
    write_member(plan.run_dir, job, latent_of(job), record_of(job) | {"seconds": 9.0})
    again = aggregate(plan.run_dir, "10h")
    assert again["unchanged"] is False and again["mean"] == first["mean"]
    assert again["seconds"] == first["seconds"] - 1.5 + 9.0


def test_create_refuses_a_path_that_is_not_a_store(tmp_path):
    config, _card, plan = small_run(tmp_path)
    create_store(plan.run_dir, plan, config)
    shutil.rmtree(store_path(plan.run_dir))
    store_path(plan.run_dir).mkdir()
    (store_path(plan.run_dir) / "notes.txt").write_text("mine")
    before = tree_hashes(plan.run_dir)
    with pytest.raises(StoreError, match="is not a zarr store"):
        create_store(plan.run_dir, plan, config)
    assert tree_hashes(plan.run_dir) == before


@pytest.mark.parametrize("what", ["files", "a store of its own", "an empty folder"])
def test_a_run_never_takes_over_a_directory_it_did_not_make(tmp_path, what):
    """Attack: ``--run-id X`` onto an ``X/`` made by someone else. Before, the run deleted
    ``X/marks/`` and overwrote ``X/config.yaml``; now it refuses with one line, touching nothing."""
    config, _card, plan = small_run(tmp_path)
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True)
    if what == "files":
        (run_dir / "marks").mkdir()
        (run_dir / "marks" / "notes.txt").write_text("mine")
        (run_dir / "config.yaml").write_text("mine: true\n")
    elif what == "a store of its own":
        store_path(run_dir).mkdir()
        (store_path(run_dir) / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    before = tree_hashes(run_dir)
    if what == "an empty folder":  # nothing to take over: it is claimed
        create_store(run_dir, plan, config)
        assert (run_dir / ".priorflow-run").is_file() and has_store(run_dir)
        return
    with pytest.raises(StoreError, match="was not made by priorflow") as caught:
        create_store(run_dir, plan, config)
    assert "\n" not in str(caught.value) and "choose another run_id" in str(caught.value)
    assert tree_hashes(run_dir) == before


def test_a_run_never_follows_a_symlinked_run_directory(tmp_path):
    config, _card, plan = small_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plan.run_dir.parent.mkdir(parents=True)
    plan.run_dir.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StoreError, match="is a symbolic link"):
        create_store(plan.run_dir, plan, config)
    assert list(elsewhere.iterdir()) == []


def test_a_store_half_built_by_a_killed_run_is_removed(run):
    config, _card, plan = run
    partial = plan.run_dir / ".prior.zarr.partial-deadbeef"
    (partial / "10h").mkdir(parents=True)
    create_store(plan.run_dir, plan, config)  # a resume
    assert not partial.exists()


def test_concurrent_runs_leave_the_config_of_the_store(tmp_path):
    """Attack: two runs of one run_id with different configs at once. The loser is refused, and
    ``config.yaml`` (written under the run lock, after the store) is the winner's."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for attempt in range(5):
        runs = [small_run(tmp_path / str(attempt), f"seed={seed}") for seed in (0, 1)]
        barrier, results = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=_create_concurrently, args=(config, plan, barrier, results))
            for config, _card, plan in runs
        ]
        for worker in workers:
            worker.start()
        outcomes = sorted(results.get(timeout=120) for _ in workers)
        for worker in workers:
            worker.join(timeout=60)
        assert [outcome for outcome, _ in outcomes] == ["created", "refused"], outcomes
        winner = outcomes[0][1]
        run_dir = runs[0][2].run_dir
        assert load_config(run_dir / CONFIG_NAME).seed == winner
        assert read_store_attrs(store_path(run_dir))["seed"] == winner


def _create_concurrently(config, plan, barrier, results):
    import faulthandler

    faulthandler.dump_traceback_later(60, exit=True)  # a hang shows where, then fails the test
    barrier.wait()
    try:
        create_store(plan.run_dir, plan, config)
    except ConfigError:
        results.put(("refused", config.seed))
    except Exception as error:  # anything else fails the test, with its message
        results.put((f"error: {error!r}", config.seed))
    else:
        results.put(("created", config.seed))


def test_aggregate_memory_does_not_grow_with_members(tmp_path):
    """Aggregation holds one member at a time: 4x the members, about the same peak memory."""
    from tests._runs import make_card

    card = make_card(state_shape=[8, 32, 32])
    member_bytes = 16 * 8 * 32 * 32 * 4  # 512 KiB

    def aggregate_peak(members_per_date: int) -> int:
        root = tmp_path / f"m{members_per_date}"
        config, _, plan = small_run(
            root, 'trajectory_sizes="16"', f"num_samples_per_date={members_per_date}", card=card
        )
        create_store(plan.run_dir, plan, config)
        for job in plan.jobs:
            rng = np.random.default_rng(job.seed)
            latent = rng.standard_normal((16, 8, 32, 32), dtype=np.float32)
            write_member(plan.run_dir, job, latent, {})
        tracemalloc.start()
        aggregate(plan.run_dir, "16h")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak

    aggregate_peak(1)  # first call: imports and caches, not what is measured
    few, many = aggregate_peak(3), aggregate_peak(12)  # 6 and 24 members
    # Seen: about 7 members' worth for 6 members and 7-9 for 24 (zarr's reads overlap a little);
    # growing with the members would add 18 members' worth.
    assert many < few + 4 * member_bytes, (few / member_bytes, many / member_bytes)
    assert many < 12 * member_bytes, many / member_bytes  # all 24 members would be 24


def test_a_failed_create_leaves_nothing(tmp_path, monkeypatch):
    import priorflow.store.schema as schema_module

    config, _card, plan = small_run(tmp_path)

    def broken(store):
        raise OSError("disk full")

    monkeypatch.setattr(schema_module, "consolidate", broken)
    with pytest.raises(OSError, match="disk full"):
        create_store(plan.run_dir, plan, config)
    assert not plan.run_dir.exists()
