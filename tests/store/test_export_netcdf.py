"""Export as netCDF: one CF file per size, read with netCDF4 and xarray, verified members only."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

from priorflow.errors import ConfigError
from priorflow.store import StoreError, create_store, store_path, write_member
from priorflow.store.export_netcdf import export_netcdf
from tests._runs import small_run


def latent_of(job) -> np.ndarray:
    return np.random.default_rng(job.seed).standard_normal((job.size, 2, 3, 4)).astype(np.float32)


@pytest.fixture
def finished(tmp_path: Path):
    config, _card, plan = small_run(tmp_path, checkpoint_sha256="ab" * 32)
    create_store(plan.run_dir, plan, config)
    for job in plan.jobs:
        write_member(plan.run_dir, job, latent_of(job), {"seconds": 1.0})
    return plan


def test_one_netcdf_file_per_size_equal_to_the_store(finished):
    plan = finished
    written = export_netcdf(plan.run_dir)
    out = plan.run_dir / "export"
    assert written == [out / "10h" / "prior.nc", out / "12h" / "prior.nc"]
    for size, path in zip(plan.sizes, written, strict=True):
        exported = xr.open_dataset(path)
        stored = xr.open_zarr(store_path(plan.run_dir), group=size.group)
        xr.testing.assert_equal(exported.latent, stored.latent)  # values, dims and coordinates
        xr.testing.assert_equal(exported.timestamps, stored.timestamps)
        assert exported.valid_time.dtype == np.dtype("datetime64[ns]")
        assert exported.latent.attrs["long_name"] == stored.latent.attrs["long_name"]
        assert exported.attrs["Conventions"] == "CF-1.10"
        assert exported.attrs["diffusion.num_steps"] == 64
        assert exported.attrs["checkpoint_sha256"] == "ab" * 32
        exported.close()


def test_netcdf4_reads_the_latent_and_valid_time_with_units(finished):
    plan = finished
    (path,) = export_netcdf(plan.run_dir, size="10h")
    size = plan.size("10h")
    with netCDF4.Dataset(path) as nc:
        assert nc.Conventions == "CF-1.10"
        assert nc.getncattr("card.blanket_size") == 8 and nc.getncattr("seed") == 0
        latent = nc["latent"]
        assert latent.dimensions == ("start_date", "member", "lead", *plan.state_dims)
        assert latent.units == "1" and latent.chunking() == [1, 1, 10, 2, 3, 4]
        for job in size.jobs:
            assert np.array_equal(latent[job.date_index, job.member], latent_of(job))
        valid = nc["valid_time"]
        assert valid.units == "hours since 1970-01-01" and valid.standard_name == "time"
        times = netCDF4.num2date(valid[:], valid.units, valid.calendar)
        assert times[1, 3].strftime("%Y-%m-%d %H") == "2000-04-20 15"
        assert nc["lead"].units == "hours" and nc["lead"].standard_name == "forecast_period"
        assert nc["member"].standard_name == "realization"
        starts = netCDF4.num2date(nc["start_date"][:], nc["start_date"].units)
        assert [s.strftime("%Y-%m-%d %H") for s in starts] == [
            datetime.strftime(d, "%Y-%m-%d %H") for d in plan.start_dates
        ]


def test_a_damaged_member_is_refused_and_nothing_is_written(finished):
    plan = finished
    job = plan.size("12h").jobs[3]
    latent = zarr.open_array(str(store_path(plan.run_dir)), path="12h/latent", mode="r+")
    latent[job.date_index, job.member] = 0.0
    with pytest.raises(StoreError) as caught:
        export_netcdf(plan.run_dir)
    message = str(caught.value)
    assert "1 members cannot be trusted" in message and job.name in message
    assert "\n" not in message
    # the first size was good and stays written; the damaged one left no file, no temporary
    export = plan.run_dir / "export"
    assert sorted(p.relative_to(export).as_posix() for p in export.rglob("*")) == [
        "10h",
        "10h/prior.nc",
    ]


def test_an_unfinished_run_and_a_size_not_in_the_run_are_refused(tmp_path, finished):
    with pytest.raises(ConfigError, match="size: '48h' is not in this run"):
        export_netcdf(finished.run_dir, size="48h")
    config, _card, plan = small_run(tmp_path / "other")
    create_store(plan.run_dir, plan, config)
    with pytest.raises(StoreError, match="10h: 4 members are not done"):
        export_netcdf(plan.run_dir)
    assert not (plan.run_dir / "export").exists()


def test_without_netcdf4_it_says_what_to_install(finished, monkeypatch):
    monkeypatch.setitem(sys.modules, "netCDF4", None)  # import netCDF4 raises ImportError
    with pytest.raises(ConfigError) as caught:
        export_netcdf(finished.run_dir)
    assert str(caught.value) == (
        "--format: netcdf needs the netCDF4 package — pip install 'priorflow[netcdf]'"
    )
    assert not (finished.run_dir / "export").exists()
