"""The latent archive: zarr round trip, reader API, one-line errors, atomic writes, the CLI."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from priorflow.core.seeds import make_generator
from priorflow.data.archive import LatentArchive, open_archive
from priorflow.data.synthetic import SyntheticWorld
from priorflow.data.synthetic_archive import write_synthetic_archive
from priorflow.errors import ArchiveError

H1 = np.timedelta64(1, "h")


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld((2, 4, 8), seed=5)


@pytest.fixture(scope="module")
def small(tmp_path_factory, world) -> tuple:
    """Ten days, hourly, written in blocks of 3 days; the progress calls are recorded."""
    path = tmp_path_factory.mktemp("archive") / "latent.zarr"
    calls = []
    write_synthetic_archive(
        path,
        "2000-02-25",
        "2000-03-05",
        world=world,
        progress=lambda done, total: calls.append((done, total)),
        seed=11,
        block_days=3,
    )
    return path, calls


def test_round_trip_with_xarray(small, world):
    path, calls = small
    ds = xr.open_zarr(path)
    assert ds["latent"].dims == ("time", "channel", "y", "x")
    assert ds["latent"].dtype == np.float32
    assert ds["latent"].shape == (240, 2, 4, 8)
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert str(ds["time"].values[0]) == "2000-02-25T00:00:00.000000000"
    assert str(ds["time"].values[-1]) == "2000-03-05T23:00:00.000000000"  # end day included
    assert ds.attrs["dt_hours"] == 1
    assert ds.attrs["world"]["kwargs"] == world.kwargs
    assert ds.attrs["seed"] == 11
    data = ds["latent"].values.astype(np.float64)
    np.testing.assert_allclose(ds.attrs["stats"]["mean"], data.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(ds.attrs["stats"]["std"], data.std(axis=(0, 2, 3)), atol=1e-6)
    # progress: once per block of 72 states, increasing, ending at the total
    assert calls == [(72, 240), (144, 240), (216, 240), (240, 240)]


def test_states_are_the_world_mean_plus_its_sampled_anomalies(small, world):
    path, _ = small
    archive = open_archive(path)
    times = archive.times
    expected = world.sample(times, make_generator(11))
    np.testing.assert_array_equal(archive.load(), expected)
    some = times[[5, 100, 7, 239]]
    got = archive.states(some)
    assert got.shape == (4, 2, 4, 8) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected[[5, 100, 7, 239]])
    # anomalies = states - exact mean are ~N(0, s^2): a loose check that the mean was added
    anomalies = archive.load() - world.mean(times)
    assert np.all(np.abs(anomalies.mean(axis=(0, 2, 3))) < 0.5)
    np.testing.assert_allclose(anomalies.std(axis=(0, 2, 3)), world.channel_std, rtol=0.2)


def test_reader_api(small):
    path, _ = small
    archive = open_archive(path)
    assert isinstance(archive, LatentArchive)
    assert archive.path == path
    assert archive.dt_hours == 1
    assert archive.state_shape == (2, 4, 8)
    assert archive.state_dims == ("channel", "y", "x")
    assert archive.start == datetime(2000, 2, 25, 0)
    assert archive.end == datetime(2000, 3, 5, 23)
    assert len(archive) == 240 and archive.times.dtype == np.dtype("datetime64[ns]")
    assert set(archive.stats) >= {"mean", "std"}
    assert archive.states(archive.times[:0]).shape == (0, 2, 4, 8)
    archive.require_covers(datetime(2000, 2, 25, 0), 240, 1)
    archive.require_covers(datetime(2000, 3, 1, 6), 10, 6)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_require_covers_names_field_date_and_range(small):
    archive = open_archive(small[0])
    with pytest.raises(ArchiveError) as error:
        archive.require_covers(datetime(2000, 3, 5, 0), 72, 1, field="start_dates")
    message = one_line(error)
    assert message.startswith("start_dates: 2000-03-05 00h + 72 states x 1 h (to 2000-03-07 23h)")
    assert "2000-02-25 00h to 2000-03-05 23h" in message
    with pytest.raises(ArchiveError, match="^context: 2000-02-24 23h lies outside"):
        archive.require_covers(datetime(2000, 2, 24, 23), 1, 1, field="context")


def test_states_outside_the_archive_are_errors(small):
    archive = open_archive(small[0])
    with pytest.raises(ArchiveError) as error:
        archive.states(np.array(["2000-03-06T00"], dtype="datetime64[ns]"))
    message = one_line(error)
    assert "2000-03-06 00h is not in the archive" in message
    assert "2000-02-25 00h to 2000-03-05 23h" in message
    with pytest.raises(ArchiveError, match="2000-02-26 00h"):  # between two states
        archive.states(np.array(["2000-02-26T00:30"], dtype="datetime64[ns]"))


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
def test_open_errors_are_one_line(tmp_path):
    with pytest.raises(ArchiveError) as error:
        open_archive(tmp_path / "missing.zarr")
    assert "missing.zarr does not exist" in one_line(error)
    assert "priorflow archive synth" in str(error.value)

    (tmp_path / "empty").mkdir()
    with pytest.raises(ArchiveError) as error:
        open_archive(tmp_path / "empty")
    assert "is not a zarr store" in one_line(error)

    (tmp_path / "file.zarr").write_text("not zarr")
    with pytest.raises(ArchiveError) as error:
        open_archive(tmp_path / "file.zarr")
    assert "is not a zarr store" in one_line(error)

    times = np.datetime64("2000-01-01", "ns") + np.arange(3) * H1
    other = xr.Dataset({"z500": (("time", "c"), np.zeros((3, 2)))}, coords={"time": times})
    other.to_zarr(tmp_path / "other.zarr", zarr_format=3)
    with pytest.raises(ArchiveError) as error:
        open_archive(tmp_path / "other.zarr")
    assert "has no 'latent' variable (found: z500)" in one_line(error)


def test_write_is_atomic(tmp_path, world):
    path = tmp_path / "latent.zarr"

    def crash(done, total):
        if done > 24:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic_archive(
            path, "2000-01-01", "2000-01-04", world=world, progress=crash, block_days=1
        )
    assert list(tmp_path.iterdir()) == []  # no final path, no temporary left behind

    write_synthetic_archive(path, "2000-01-01", "2000-01-02", world=world)
    with pytest.raises(ArchiveError, match="already exists"):
        write_synthetic_archive(path, "2000-01-01", "2000-01-02", world=world)
    # a failed overwrite keeps the old archive
    with pytest.raises(RuntimeError):
        write_synthetic_archive(
            path,
            "2000-01-01",
            "2000-01-04",
            world=world,
            progress=crash,
            block_days=1,
            overwrite=True,
        )
    assert len(open_archive(path)) == 48
    write_synthetic_archive(path, "2000-01-01", "2000-01-03 5h", world=world, overwrite=True)
    assert len(open_archive(path)) == 54
    assert [p.name for p in tmp_path.iterdir()] == ["latent.zarr"]


def test_write_argument_errors(tmp_path, world):
    with pytest.raises(ArchiveError, match="^end: .* is before start"):
        write_synthetic_archive(tmp_path / "a.zarr", "2000-01-02", "2000-01-01 3h", world=world)
    with pytest.raises(ArchiveError, match="^dt_hours: 5 must divide 24"):
        write_synthetic_archive(tmp_path / "a.zarr", "2000-01-01", "2000-01-02", dt_hours=5)
    assert list(tmp_path.iterdir()) == []


def test_six_hourly_archive(tmp_path, world):
    path = write_synthetic_archive(
        tmp_path / "a.zarr", "2000-01-01", "2000-01-03", world=world, dt_hours=6
    )
    archive = open_archive(path)
    assert archive.dt_hours == 6 and len(archive) == 12
    assert archive.end == datetime(2000, 1, 3, 18)
    with pytest.raises(ArchiveError, match="not on the archive's time grid"):
        archive.require_covers(datetime(2000, 1, 1, 3), 2, 6)
    with pytest.raises(ArchiveError, match="not on the archive's time grid"):
        archive.require_covers(datetime(2000, 1, 1, 0), 2, 1)


@pytest.fixture(scope="module")
def two_years(tmp_path_factory, world) -> LatentArchive:
    path = tmp_path_factory.mktemp("clim") / "latent.zarr"
    return open_archive(write_synthetic_archive(path, "2000-01-01", "2001-12-31", world=world))


def test_climatology_is_the_windowed_day_of_year_hour_mean(two_years, world):
    archive = two_years
    times = np.array(["2000-03-10T06", "2001-12-30T23", "2005-07-01T12"], dtype="datetime64[ns]")
    clim = archive.climatology(times)
    assert clim.shape == (3, 2, 4, 8) and clim.dtype == np.float32
    # the definition, by brute force: same hour, day of year within 15 days (circular), all years
    data = archive.load().astype(np.float64)

    def season_day(index: pd.DatetimeIndex) -> np.ndarray:
        fraction = (index.day_of_year - 1 + index.hour / 24) / np.where(
            index.is_leap_year, 366, 365
        )
        return np.asarray(fraction) * 365.25

    index = pd.DatetimeIndex(archive.times)
    for t, c in zip(pd.DatetimeIndex(times), clim, strict=True):
        distance = np.abs(season_day(index) - season_day(pd.DatetimeIndex([t])))
        distance = np.minimum(distance, 365.25 - distance)
        rows = (index.hour == t.hour) & (distance <= 15)
        assert 55 <= rows.sum() <= 64
        np.testing.assert_allclose(c, data[rows].mean(axis=0), atol=1e-5)
    # and it estimates the exact mean: error ~ s / sqrt(62) per element
    err = clim - world.mean(times)
    assert np.sqrt((err**2).mean()) < 2 * world.channel_std.max() / np.sqrt(60)


def test_two_years_of_the_default_world(tmp_path):
    """The default archive (its write speed is benchmarks' business, not a test's)."""
    path = write_synthetic_archive(tmp_path / "latent.zarr", "2000-01-01", "2001-12-31")
    archive = open_archive(path)
    assert len(archive) == 17544 and archive.state_shape == (4, 16, 32)
    np.testing.assert_allclose(archive.stats["mean"], 0, atol=0.05)
    np.testing.assert_allclose(archive.stats["std"], 1, atol=0.05)


# ------------------------------------------------------------------------------ command line


def test_cli_synth_and_info(tmp_path, capsys):
    from cli import main

    out = tmp_path / "latent.zarr"
    argv = [
        "archive",
        "synth",
        "--start",
        "2000-01-01",
        "--end",
        "2000-01-02",
        "--out",
        str(out),
        "--seed",
        "3",
        "--shape",
        "2,4,8",
    ]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    archive = open_archive(out)
    assert len(archive) == 48 and archive.state_shape == (2, 4, 8)
    assert archive.attrs["seed"] == 3
    with pytest.raises(SystemExit) as exit_:
        main(["archive", "info", str(out)])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "2000-01-01 00h to 2000-01-02 23h every 1 h" in text
    assert "states      48" in text and "'channel': 2" in text and "std" in text

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --out: {out} already exists; remove it or pass --overwrite"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["archive", "info", str(tmp_path / "nope.zarr")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: archive: ") and err.count("\n") == 1


def test_archive_rebuilds_its_world(small, world, tmp_path):
    archive = open_archive(small[0])
    np.testing.assert_array_equal(archive.world.fingerprint(), world.fingerprint())
    times = np.datetime64("2000-01-01", "ns") + np.arange(3) * H1
    plain = xr.Dataset({"latent": (("time", "c"), np.zeros((3, 2), "float32"))}, {"time": times})
    with pytest.warns(UserWarning):  # zarr's note on consolidated metadata in format 3
        plain.to_zarr(tmp_path / "plain.zarr", zarr_format=3)
    real = open_archive(tmp_path / "plain.zarr")
    assert real.world is None and real.state_shape == (2,) and real.stats == {}
