"""``priorflow model info`` and ``priorflow plan`` on an Appa lap, as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from priorflow.models.loading import file_sha256
from tests.appa_tree import STANDIN, seed_config, write_appa_tree

PRIORFLOW = str(Path(sys.executable).parent / "priorflow")


def priorflow(*args: str, cwd: Path, appa: bool = True) -> subprocess.CompletedProcess:
    """The command in a subprocess; ``appa``: the stand-in Appa package is installed."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if appa:
        env["PYTHONPATH"] = str(STANDIN)
    return subprocess.run(
        [PRIORFLOW, *args], capture_output=True, text=True, cwd=cwd, timeout=180, env=env
    )


def refused(result: subprocess.CompletedProcess) -> str:
    """The one line a refusal prints (exit 2, no traceback)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def lap(tmp_path_factory) -> Path:
    return write_appa_tree(tmp_path_factory.mktemp("appa"))


def test_model_info_of_a_lap(lap, tmp_path):
    result = priorflow("model", "info", str(lap), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "format      appa" in out
    assert "blanket     K = 8 states, dt = 1 h" in out
    assert "schedule    rectified, sigma 0.001 to 1000" in out
    assert "steps       16" in out and "precision   float16" in out
    assert "state       (32, 3)" in out
    assert f"archive     {(lap.parents[2] / 'era5.h5').resolve()}" in out
    assert "2000-03-01 00h to 2000-05-31 23h every 1 h (2208 states)" in out
    assert "(x - mean) / std with" in out and "stats.pth" in out
    assert f"best: model_best.pth sha256 {file_sha256(lap / 'model_best.pth')} (fits)" in out
    assert f"last: model_last.pth sha256 {file_sha256(lap / 'model_last.pth')} (fits)" in out


def test_model_info_of_a_priorflow_directory(tmp_path):
    reference = Path(__file__).parents[2] / "models" / "reference"
    result = priorflow("model", "info", str(reference), cwd=tmp_path, appa=False)
    assert result.returncode == 0, result.stderr
    assert "format      priorflow" in result.stdout and "state       (4, 16, 32)" in result.stdout


def test_model_info_without_appa_says_how_to_install(lap, tmp_path):
    line = refused(priorflow("model", "info", str(lap), cwd=tmp_path, appa=False))
    assert "pip install 'priorflow[appa]'" in line and "appa.diffusion.create_denoiser" in line


def test_plan_of_the_seed_yaml_with_a_lap(lap, tmp_path):
    config = seed_config(tmp_path / "seed.yaml", lap)
    result = priorflow("plan", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    row = next(line for line in out.splitlines() if line.strip().startswith("72h"))
    assert row.split()[:4] == ["72h", "72", "72", "17"]  # K = 8 from the lap, overlap 4
    assert "lms (grid=uniform, order=3), 64 steps, float16, overlap O=4" in out
    assert not (tmp_path / "runs").exists()


def test_a_date_outside_the_hdf5_archive(lap, tmp_path):
    config = seed_config(tmp_path / "seed.yaml", lap)
    line = refused(
        priorflow("plan", str(config), "--set", 'start_dates=["2000-05-30 0h"]', cwd=tmp_path)
    )
    assert "start_dates" in line and "lies outside the archive" in line
    assert "2000-03-01 00h to 2000-05-31 23h" in line


def test_a_missing_stats_file(tmp_path):
    lap = write_appa_tree(tmp_path / "tree")
    (lap.parents[2] / "stats.pth").unlink()
    line = refused(priorflow("plan", str(seed_config(tmp_path / "seed.yaml", lap)), cwd=tmp_path))
    assert "stats.pth is missing" in line


def test_a_lap_whose_k_disagrees_with_its_checkpoint(tmp_path):
    lap = write_appa_tree(tmp_path / "tree", blanket_size=6)  # checkpoints of K = 8
    line = refused(priorflow("plan", str(seed_config(tmp_path / "seed.yaml", lap)), cwd=tmp_path))
    assert "model_best.pth does not fit the backbone Appa builds for lap config K=6" in line
    assert "shape mismatch" in line


def test_the_archive_option_still_overrides(lap, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(lap.parents[2] / "era5.h5", other / "era5.h5")  # no stats.pth beside it
    config = seed_config(tmp_path / "seed.yaml", lap)
    line = refused(
        priorflow("plan", str(config), "--set", f"archive={other / 'era5.h5'}", cwd=tmp_path)
    )
    assert str(other / "stats.pth") in line
