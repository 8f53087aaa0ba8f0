"""The run-time estimate of a plan, measured on an earlier run of the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from priorflow.config.values import duration_words, time_words
from priorflow.run.estimate import (
    Rate,
    estimate_for,
    measured_rate,
    sampler_evaluations,
    walltime_warning,
)
from priorflow.run.execute import run_jobs
from priorflow.store import create_store, run_provenance
from tests._runs import prepared_run
from tests.prefect_fixtures import tiny_world, write_run_config  # noqa: F401  (fixture)

SLOWEST = 0.002  # seconds per blanket evaluation written into the earlier run's records


def make_earlier_run(world: dict[str, Path], output_dir: Path) -> Path:
    """A finished earlier run of the tiny model (size 9, 2 members) under ``output_dir``, its
    records rewritten as if measured on a slower machine: 1 and 2 ms per blanket evaluation."""
    config = write_run_config(
        output_dir.parent / "earlier.yaml",
        world["model"],
        world["archive"],
        trajectory_sizes="9",
        start_dates=["2000-01-05 12h"],
        output_dir=str(output_dir),
    )
    plan = prepared_run(config, run_id="earlier").plan
    create_store(
        plan.run_dir, plan, prepared_run(config, run_id="earlier").config, run_provenance()
    )
    run_jobs(plan.jobs, str(plan.run_dir), log=lambda line: None)
    for rate, mark_file in zip(
        (SLOWEST / 2, SLOWEST), sorted(plan.run_dir.rglob("marks/*/*.json")), strict=True
    ):
        mark = json.loads(mark_file.read_text())
        mark["record"]["seconds"] = rate * mark["record"]["blanket_evaluations"]
        mark_file.write_text(json.dumps(mark))
    return plan.run_dir


@pytest.fixture
def earlier(tiny_world, tmp_path) -> Path:  # noqa: F811
    return make_earlier_run(tiny_world, tmp_path / "runs")


def test_the_rate_is_the_slowest_member_of_this_model_device_and_precision(earlier, tmp_path):
    output_dir = earlier.parent
    sha = prepared_run(earlier / "config.yaml").plan.spec.checkpoint_sha256
    rate = measured_rate(output_dir, sha, "cpu", "float32")
    assert rate == Rate(pytest.approx(SLOWEST), 2, 1, "cpu")
    assert measured_rate(output_dir, sha, "cuda", "float32") is None  # measured on a CPU
    assert measured_rate(output_dir, sha, "cpu", "float16") is None
    assert measured_rate(output_dir, "0" * 64, "cpu", "float32") is None  # another model
    assert measured_rate(tmp_path / "nothing", sha, "cpu", "float32") is None


def test_a_batch_job_walltime_shorter_than_its_estimate_is_named(earlier, tiny_world):  # noqa: F811
    config = write_run_config(
        earlier.parent.parent / "long.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        trajectory_sizes="400",
        diffusion={"num_steps": 2000, "sampler": {"type": "lms"}},
        output_dir=str(earlier.parent),
        hardware={"backend": "slurm", "max_workers": 2, "gen": {"gpus": 0, "time": "0:10:00"}},
    )
    prepared = prepared_run(config, run_id="long")
    plan, hardware = prepared.plan, prepared.config.hardware
    assert sampler_evaluations(plan.spec) == 2000
    estimate = estimate_for(plan, hardware, prepared.config.output_dir)
    task = SLOWEST * 2000 * plan.sizes[0].num_blankets  # 133 blankets: ~8.9 min
    assert estimate.task_seconds == pytest.approx((task,) * 4)
    assert (estimate.workers, estimate.tasks_per_worker) == (2, 2)
    assert estimate.worker_seconds == pytest.approx(2 * task)
    assert walltime_warning(estimate, plan, hardware) == (
        f"hardware.gen.time: {time_words('0:10:00')} is shorter than a worker job's estimated"
        f" run time, ~{duration_words(2 * task)} (2 tasks of up to ~{duration_words(task)});"
        " give the jobs more time (or more hardware.max_workers)"
    )
    roomy = prepared_run(config, 'hardware.gen.time="1:00:00"', run_id="long")
    assert walltime_warning(estimate, roomy.plan, roomy.config.hardware) is None
    local = prepared_run(config, "hardware.backend=local", run_id="long")
    assert walltime_warning(estimate, local.plan, local.config.hardware) is None  # no walltime
