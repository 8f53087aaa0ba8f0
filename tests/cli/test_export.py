"""``priorflow export`` as a user runs it: pt and netCDF files; onto a full disk, one line."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import netCDF4
import torch
import xarray as xr

from priorflow.store import create_store, write_member
from tests._runs import small_run

PRIORFLOW = str(Path(sys.executable).parent / "priorflow")


def finished_run(tmp_path: Path) -> Path:
    config, _card, plan = small_run(tmp_path)
    create_store(plan.run_dir, plan, config)
    for job in plan.jobs:
        write_member(plan.run_dir, job, torch.randn(job.size, 2, 3, 4), {"seconds": 1.0})
    return plan.run_dir


def full_disk() -> None:
    """In the child: files may not grow past 1 kB (what a full disk does to a writer)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    run_dir = finished_run(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [PRIORFLOW, "export", str(run_dir), "--format", "pt", "--out", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=full_disk,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out: writing ")
    assert "Traceback" not in result.stderr and not out.exists()


def test_export_writes_every_size(tmp_path):
    run_dir = finished_run(tmp_path)
    result = subprocess.run(
        [PRIORFLOW, "export", str(run_dir), "--format", "pt"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["10h", "12h"]


def test_export_netcdf_writes_one_file_per_size_that_netcdf4_and_xarray_read(tmp_path):
    run_dir = finished_run(tmp_path)
    result = subprocess.run(
        [PRIORFLOW, "export", str(run_dir), "--format", "netcdf", "--size", "12h"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    path = run_dir / "export" / "12h" / "prior.nc"
    assert result.stdout == f"wrote {path}\n"
    assert [p.name for p in (run_dir / "export").iterdir()] == ["12h"]
    with netCDF4.Dataset(path) as nc:
        assert nc["latent"].shape == (2, 2, 12, 2, 3, 4) and nc["latent"].units == "1"
        assert nc["valid_time"].units == "hours since 1970-01-01"
    with xr.open_dataset(path) as exported:
        stored = xr.open_zarr(run_dir / "prior.zarr", group="12h")
        xr.testing.assert_equal(exported.latent, stored.latent)


def test_export_netcdf_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    run_dir = finished_run(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [PRIORFLOW, "export", str(run_dir), "--format", "netcdf", "--out", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=full_disk,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out: writing "), result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
