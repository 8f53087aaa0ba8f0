"""An Appa user's first run: the seed YAML, changed only in ``model_path`` (an Appa lap folder)
and the hardware, runs end to end on the local backend and on the local SLURM cluster.

The Appa tree (``tests/appa_tree.py``: autoencoder config, HDF5 latent dump with ``stats.pth``,
a lap with ``config.yaml`` and checkpoints) is built once; the stand-in ``appa`` package is put on
``PYTHONPATH``, as an installed Appa would be, so the Dask workers (local processes, SLURM jobs)
build the backbone with its factory, and log each call. Checked: the stores equal a run of the
same backbone wrapped as a priorflow model directory bit for bit (one torch thread); the store
records the lap's card and the standardization (mean, std, sha256 of ``stats.pth``); the factory
ran inside the workers (SLURM: inside the batch jobs); ``export_pt`` writes Appa's layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from flows.generate import generate_priors
from priorflow.models.loading import file_sha256
from priorflow.store import read_store_attrs, store_path
from priorflow.store.export import export_pt
from tests.appa_tree import STANDIN, seed_config, wrapped_model_dir, write_appa_tree
from tests.prefect_fixtures import prefect_api  # noqa: F401  (fixture)
from tests.slurm_local import SLURM_HARDWARE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def appa_env(prefect_api, tmp_path_factory):  # noqa: F811
    """The Appa tree, the stand-in on the path of this process and its workers, a work dir."""
    root = tmp_path_factory.mktemp("appa-flow")
    lap = write_appa_tree(root / "tree")
    log = root / "factory.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(STANDIN))
        patch.setenv(
            "PYTHONPATH",
            os.pathsep.join(filter(None, [str(STANDIN), os.environ.get("PYTHONPATH")])),
        )
        patch.setenv("APPA_STANDIN_LOG", str(log))
        patch.setenv("PRIORFLOW_TORCH_THREADS", "1")
        patch.chdir(root)  # the seed YAML names no output_dir: runs go to ./runs
        yield {"root": root, "lap": lap, "log": log}


def factory_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def latents(run_dir: Path) -> np.ndarray:
    with xr.open_zarr(store_path(run_dir), group="72h") as group:
        return group["latent"].values


@pytest.fixture(scope="module")
def local_runs(appa_env):
    root, lap = appa_env["root"], appa_env["lap"]
    appa = seed_config(root / "appa.yaml", lap)
    wrapped = seed_config(root / "wrapped.yaml", wrapped_model_dir(lap, root / "wrapped"))
    appa_state = generate_priors(str(appa), run_id="appa", return_state=True)
    calls = factory_calls(appa_env["log"])
    wrapped_state = generate_priors(str(wrapped), run_id="wrapped", return_state=True)
    return {"appa": appa_state, "wrapped": wrapped_state, "calls": calls}


def test_the_seed_yaml_runs_an_appa_lap_locally(appa_env, local_runs):
    assert local_runs["appa"].is_completed(), local_runs["appa"].message
    assert local_runs["wrapped"].is_completed(), local_runs["wrapped"].message
    runs = appa_env["root"] / "runs"
    ours = latents(runs / "appa")
    assert ours.shape == (2, 2, 72, 32, 3) and np.isfinite(ours).all()
    np.testing.assert_array_equal(ours, latents(runs / "wrapped"))


def test_the_factory_built_the_backbone_in_the_workers(local_runs):
    calls = local_runs["calls"]
    assert {call["device"] for call in calls} >= {"meta", "cpu"}  # the plan's check, the jobs
    assert all(call["overrides"] == {"checkpointing": True} for call in calls)
    workers = {call["pid"] for call in calls if call["device"] == "cpu"}
    assert workers and os.getpid() not in workers


def test_the_store_records_the_lap_and_its_standardization(appa_env, local_runs):
    lap = appa_env["lap"]
    attrs = read_store_attrs(store_path(appa_env["root"] / "runs" / "appa"))
    assert attrs["card"]["metadata"]["format"] == "appa"
    assert attrs["card"]["blanket_size"] == 8 and attrs["precision"] == "float16"
    assert attrs["checkpoint_sha256"] == file_sha256(lap / "model_best.pth")
    stats = torch.load(lap.parents[2] / "stats.pth", weights_only=True)
    record = attrs["standardization"]
    assert record["mean"] == pytest.approx(stats["mean"].tolist())
    assert record["std"] == pytest.approx(stats["std"].tolist())
    assert record["stats_sha256"] == file_sha256(lap.parents[2] / "stats.pth")


def test_export_writes_appa_layout(appa_env, local_runs, tmp_path):
    files = export_pt(appa_env["root"] / "runs" / "appa", tmp_path)
    trajectories = torch.load(tmp_path / "72h" / "trajectories.pt", weights_only=True)
    timestamps = torch.load(tmp_path / "72h" / "timestamps.pt", weights_only=True)
    assert len(files) == 2
    assert tuple(trajectories.shape) == (2, 2, 72, 32, 3)
    assert tuple(timestamps.shape) == (2, 2, 72, 4)
    assert timestamps[1, 0, 0].tolist() == [2000, 4, 20, 12]


@pytest.mark.slow
def test_the_seed_yaml_runs_an_appa_lap_on_slurm(appa_env, local_runs, slurm_cluster):
    config = seed_config(appa_env["root"] / "slurm.yaml", appa_env["lap"], hardware=SLURM_HARDWARE)
    before = len(factory_calls(appa_env["log"]))
    state = generate_priors(str(config), run_id="appa-slurm", return_state=True)
    assert state.is_completed(), state.message
    assert slurm_cluster.wait_empty() == []
    runs = appa_env["root"] / "runs"
    np.testing.assert_array_equal(latents(runs / "appa-slurm"), latents(runs / "appa"))
    in_jobs = [c for c in factory_calls(appa_env["log"])[before:] if c["device"] == "cpu"]
    assert in_jobs and all(c["slurm"] and c["slurm"].isdigit() for c in in_jobs)


def test_the_prior_check_reads_the_archive_standardized(appa_env, local_runs):
    """The check opens the lap's HDF5 archive standardized (it needs stats.pth to run)."""
    from priorflow.evaluation.check import run_check

    result = run_check(appa_env["root"] / "runs" / "appa", {"plots": False})
    assert result.numbers["72h"], result.numbers
    assert result.report.is_file()
