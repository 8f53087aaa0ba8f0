"""The newest finished run under an output folder (what ``prior-check`` checks by default)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import zarr

from priorflow.errors import ConfigError
from priorflow.run.execute import run_jobs
from priorflow.run.finished import finished_at, newest_finished_run
from priorflow.store import aggregate, create_store, run_provenance, store_path
from priorflow.store.layout import RUN_MARKER, consolidate
from tests._runs import prepared_run
from tests.prefect_fixtures import tiny_world, write_run_config  # noqa: F401  (fixture)


def make_run(world: dict[str, Path], runs: Path, run_id: str, finish: bool = True) -> Path:
    """A run of the tiny model (sizes 6 and 9, one date, one member); aggregated if ``finish``."""
    config = write_run_config(
        runs.parent / f"{run_id}.yaml",
        world["model"],
        world["archive"],
        start_dates=["2000-01-05 12h"],
        num_samples_per_date=1,
        output_dir=str(runs),
    )
    prepared = prepared_run(config, run_id=run_id)
    plan = prepared.plan
    create_store(plan.run_dir, plan, prepared.config, run_provenance())
    run_jobs(plan.jobs[:1], str(plan.run_dir), log=lambda line: None)
    if finish:
        run_jobs(plan.jobs[1:], str(plan.run_dir), log=lambda line: None)
        for size in plan.sizes:
            aggregate(plan.run_dir, size.group)
    return plan.run_dir


def test_the_newest_finished_run_is_the_last_aggregated(tiny_world, tmp_path):  # noqa: F811
    runs = tmp_path / "runs"
    older = make_run(tiny_world, runs, "older")
    for group in ("6h", "9h"):  # as if it finished long ago
        zarr.open_group(str(store_path(older)), path=group, mode="r+").attrs["end_time"] = (
            "2001-01-01T00:00:00+00:00"
        )
    consolidate(store_path(older))  # as aggregation does after it writes
    newer = make_run(tiny_world, runs, "newer")
    unfinished = make_run(tiny_world, runs, "unfinished", finish=False)  # made last
    foreign = shutil.copytree(newer, runs / "copied")  # a copy without priorflow's marker
    (foreign / RUN_MARKER).unlink()
    (runs / "notes.txt").write_text("not a run")

    assert finished_at(older) == "2001-01-01T00:00:00+00:00"
    assert finished_at(unfinished) is None and finished_at(foreign) is None
    assert newest_finished_run(runs) == newer
    assert newest_finished_run(str(runs)) == newer


@pytest.mark.parametrize("what", ["empty", "missing", "unfinished only"])
def test_no_finished_run_is_one_line(tiny_world, tmp_path, what):  # noqa: F811
    runs = tmp_path / "runs"
    if what == "empty":
        runs.mkdir()
    elif what == "unfinished only":
        make_run(tiny_world, runs, "unfinished", finish=False)
    with pytest.raises(ConfigError) as error:
        newest_finished_run(runs)
    assert str(error.value) == (
        f"run_dir: not given, and {runs} holds no finished run (a run directory priorflow made"
        " with every size aggregated) — give run_dir, or output_dir where the runs are"
    )
