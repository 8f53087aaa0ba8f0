"""The run plan: padded lengths, blanket counts, jobs, seeds, resources, checks before writing."""

from __future__ import annotations

import inspect
from datetime import datetime
from pathlib import Path

import pytest

from priorflow.config import load_config
from priorflow.core.generate import generate_trajectories
from priorflow.core.seeds import job_seed
from priorflow.data.archive import open_archive
from priorflow.data.synthetic import SyntheticWorld
from priorflow.data.synthetic_archive import write_synthetic_archive
from priorflow.errors import ArchiveError, ConfigError
from priorflow.plan import (
    batches,
    format_plan,
    job_name,
    make_plan,
    resolve_archive_path,
    task_label,
)
from tests._runs import ORIGINAL_EXAMPLE, make_card, write_config


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return write_config(tmp_path / "example.yaml", ORIGINAL_EXAMPLE)


def plan_of(example: Path, *overrides: str, gpus_available: int | None = None, **card: object):
    config = load_config(example, ["run_id=r", *overrides])
    return make_plan(config, make_card(**card), gpus_available=gpus_available)


def test_example_plan(example: Path):
    plan = plan_of(example)
    (size,) = plan.sizes
    assert (size.trajectory_size, plan.spec.blanket_size, plan.spec.blanket_overlap) == (72, 8, 4)
    assert (size.padded_size, size.num_blankets, size.stride) == (72, 17, 4)
    assert (size.group, size.span_hours) == ("72h", 72)
    assert plan.num_jobs == 4 and len(plan.jobs) == 4
    assert [job.name for job in plan.jobs] == [
        "gen-72h-2000-04-03T00-m0",
        "gen-72h-2000-04-03T00-m1",
        "gen-72h-2000-04-20T12-m0",
        "gen-72h-2000-04-20T12-m1",
    ]
    for job in plan.jobs:
        assert job.seed == job_seed(0, 72, job.start, job.member)
        assert job.gpus == 1 and job.resources.gpus == 1
        assert (job.resources.cpus, job.resources.ram, job.resources.time) == (
            8,
            "64GB",
            "6:00:00",
        )
        assert job.resources.partition == "gpu"
        assert job.name == job_name(job.group, job.start, job.member)
    assert [(j.date_index, j.member) for j in plan.jobs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len({job.seed for job in plan.jobs}) == 4
    assert plan.aggregate_resources.partition == "cpu" and plan.aggregate_resources.gpus == 0
    assert (
        plan.spec.num_steps,
        plan.spec.precision,
        plan.spec.sampler,
        plan.spec.sampler_config,
    ) == (
        64,
        "float16",
        "lms",
        {"grid": "uniform", "order": 3},
    )
    assert plan.run_dir == Path(load_config(example).output_dir) / "r"


def test_sizes_range(example: Path):
    plan = plan_of(example, "trajectory_sizes=24-26")
    table = [(s.group, s.trajectory_size, s.padded_size, s.num_blankets) for s in plan.sizes]
    assert table == [("24h", 24, 24, 5), ("25h", 25, 28, 6), ("26h", 26, 28, 6)]
    assert plan.num_jobs == 12
    assert plan.size("25h") is plan.sizes[1] and plan.size(26) is plan.sizes[2]
    with pytest.raises(ConfigError, match="size: '48h' is not in this run"):
        plan.size("48h")


def test_groups_are_named_by_span_in_hours(example: Path):
    plan = plan_of(example, "trajectory_sizes=4,20", dt_hours=6)
    assert [(s.group, s.span_hours, s.padded_size, s.num_blankets) for s in plan.sizes] == [
        ("24h", 24, 8, 1),
        ("120h", 120, 20, 4),
    ]
    assert plan.jobs[0].name == "gen-24h-2000-04-03T00-m0"


def test_overlap_must_be_smaller_than_the_blanket(example: Path):
    with pytest.raises(ConfigError) as caught:
        plan_of(example, "blanket_overlap=8")
    assert (
        str(caught.value) == "blanket_overlap: 8 must be smaller than the model's blanket_size 8"
    )


@pytest.mark.parametrize(
    ("overrides", "gpus_available", "expected"),
    [
        (["hardware.gen.blankets_per_gpu=8"], None, 3),  # ceil(17 / 8)
        (["hardware.gen.blankets_per_gpu=17"], None, 1),
        (
            ["hardware.gen.blankets_per_gpu=2"],
            None,
            4,
        ),  # ceil(17 / 2) = 9, capped by gpus_per_node
        (["hardware.gen.blankets_per_gpu=2", "hardware.gpus_per_node=null"], None, 9),
        (["hardware.gen.blankets_per_gpu=8"], 2, 2),  # a local machine with 2 GPUs
        (["hardware.gen.blankets_per_gpu=8"], 0, 0),  # CPU only
    ],
)
def test_gpus_auto(example: Path, overrides, gpus_available, expected):
    plan = plan_of(example, "hardware.gen.gpus=auto", *overrides, gpus_available=gpus_available)
    assert {job.gpus for job in plan.jobs} == {expected}
    assert plan.sizes[0].gpus == expected


def test_gpus_auto_per_size(example: Path):
    plan = plan_of(
        example,
        "trajectory_sizes=8,72",
        "hardware.gen.gpus=auto",
        "hardware.gen.blankets_per_gpu=5",
    )
    assert [(s.num_blankets, s.gpus) for s in plan.sizes] == [(1, 1), (17, 4)]
    assert "gpus per size" in format_plan(plan)


def test_fixed_gpus_capped_by_what_a_local_run_has(example: Path):
    assert {j.gpus for j in plan_of(example, gpus_available=0).jobs} == {0}
    assert {j.gpus for j in plan_of(example, gpus_available=3).jobs} == {1}


def test_null_steps_and_precision_come_from_the_card(example: Path):
    plan = plan_of(
        example,
        "diffusion.num_steps=null",
        "precision=null",
        denoising_steps=12,
        precision="bfloat16",
    )
    assert (plan.spec.num_steps, plan.spec.precision) == (12, "bfloat16")


def test_every_job_samples_with_the_one_spec(example: Path, monkeypatch):
    import priorflow.plan.spec as spec_module

    plan = plan_of(example, "blanket_batch=4", "fold_mode=causal")
    assert all(job.spec is plan.spec for job in plan.jobs)  # one record, carried by every job
    job = plan.jobs[3]
    seen: dict = {}

    def generate(*args, **kwargs):
        inspect.signature(generate_trajectories).bind(*args, **kwargs)  # a wrong name raises
        seen.update(kwargs, args=args)

    monkeypatch.setattr(spec_module, "generate_trajectories", generate)
    job.spec.sample(None, job.size, [job.start], [job.seed])
    assert seen["args"][1:] == (72, [datetime(2000, 4, 20, 12)], [job.seed])
    assert (seen["overlap"], seen["fold"], seen["blanket_batch"]) == (4, "causal", 4)
    assert (seen["sampler"], seen["sampler_config"], seen["steps"], seen["precision"]) == (
        "lms",
        {"grid": "uniform", "order": 3},
        64,
        "float16",
    )


def test_jobs_go_in_tasks_of_one_size(example: Path):
    plan = plan_of(example, 'trajectory_sizes="24,48"', "num_samples_per_date=3")
    tasks = batches(plan.jobs, 4)
    assert [len(t) for t in tasks] == [4, 2, 4, 2]  # 6 jobs per size, never mixing sizes
    assert all(len({job.size for job in t}) == 1 for t in tasks)
    assert [job for t in tasks for job in t] == plan.jobs
    assert task_label(tasks[0]) == f"{tasks[0][0].name}+3"
    assert task_label(tasks[0][:1]) == tasks[0][0].name
    assert [len(t) for t in batches(plan.jobs, 1)] == [1] * 12


def test_format_plan_shows_the_numbers(example: Path):
    text = format_plan(plan_of(example))
    row = next(line for line in text.splitlines() if line.strip().startswith("72h"))
    assert row.split() == ["72h", "72", "72", "17", "4", "4", "1"]
    assert "4 generation + 1 aggregation" in text
    assert "cpus 8, ram 64GB, time 6:00:00 = 6 h, partition gpu, gpus 1" in text
    assert "cpus 4, ram 32GB, time 1:00:00 = 1 h, partition cpu, gpus 0" in text
    assert "lms (grid=uniform, order=3), 64 steps, float16" in text


def test_plan_is_pure(example: Path, tmp_path: Path):
    before = sorted(tmp_path.rglob("*"))
    plan = plan_of(example, f"output_dir={tmp_path / 'runs'}")
    assert not plan.run_dir.exists()
    assert sorted(tmp_path.rglob("*")) == before


def test_summary_is_small_and_jsonable(example: Path):
    import json

    summary = plan_of(example).summary()
    assert json.loads(json.dumps(summary))["sizes"][0]["num_blankets"] == 17


def test_archive_path_defaults_to_the_card(example: Path, tmp_path: Path):
    config = load_config(example, [f"model_path={tmp_path / 'model'}"])
    assert resolve_archive_path(config, make_card()) is None
    assert resolve_archive_path(config, make_card(archive="../data/a.zarr")) == str(
        tmp_path / "model" / "../data/a.zarr"
    )
    config = load_config(example, [f"archive={tmp_path / 'b.zarr'}"])
    assert resolve_archive_path(config, make_card(archive="x")) == str(tmp_path / "b.zarr")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("archive") / "a.zarr"
    world = SyntheticWorld((2, 3, 4), seed=0)
    write_synthetic_archive(path, "2000-04-01", "2000-04-23", world=world, dt_hours=1)
    return open_archive(path)


def test_dates_checked_against_the_archive(example: Path, archive):
    plan = make_plan(load_config(example), make_card(), archive)  # 04-20 12h + 71 h fits
    assert plan.state_dims == archive.state_dims
    with pytest.raises(
        ArchiveError, match=r"^start_dates: 2000-04-20 12h \+ 96 states.*outside the archive"
    ):
        make_plan(load_config(example, ["trajectory_sizes=24,96"]), make_card(), archive)
    with pytest.raises(ArchiveError, match="^start_dates: 1999-12-31 00h"):
        make_plan(load_config(example, ['start_dates=["1999-12-31 0h"]']), make_card(), archive)


def test_archive_state_shape_must_be_the_models(example: Path, archive):
    with pytest.raises(ConfigError, match=r"^archive: states of shape \(2, 3, 4\)"):
        make_plan(load_config(example), make_card(state_shape=[4, 4]), archive)
