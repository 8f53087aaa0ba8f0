"""Appa's HDF5 latent archive: standardized as training saw it, checked, one-line refusals."""

from __future__ import annotations

import pickle
from datetime import datetime

import h5py
import numpy as np
import pytest
import torch

from priorflow.data.appa_archive import open_hdf5_archive
from priorflow.data.archive import open_archive
from priorflow.errors import ArchiveError
from tests.appa_tree import STATE, write_archive


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("dump") / "dump").parent


def one_line(call) -> str:
    with pytest.raises(ArchiveError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_open_archive_reads_hdf5_standardized_with_stats(dump):
    archive = open_archive(dump / "era5.h5")
    with h5py.File(dump / "era5.h5") as file:
        raw = file["latents"][:48].astype(np.float64)
    stats = torch.load(dump / "stats.pth", weights_only=True)
    expected = (raw - stats["mean"].numpy()) / stats["std"].numpy()
    np.testing.assert_allclose(archive.states(archive.times[:48]), expected, rtol=1e-6, atol=1e-6)
    assert archive.state_shape == STATE and archive.state_dims == ("node", "channel")
    assert archive.dt_hours == 1 and archive.start == datetime(2000, 3, 1)
    assert archive.end == datetime(2000, 5, 31, 23)
    # the whole archive, standardized, has mean 0 and std 1 per channel
    data = archive.load().reshape(-1, STATE[-1]).astype(np.float64)
    np.testing.assert_allclose(data.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.std(0), 1, atol=1e-5)
    record = archive.standardization
    assert record["mean"] == pytest.approx(stats["mean"].tolist())
    assert record["std"] == pytest.approx(stats["std"].tolist())
    assert len(record["stats_sha256"]) == 64 and record["stats_file"].endswith("stats.pth")


def test_raw_values_without_standardizing(dump):
    archive = open_hdf5_archive(dump / "era5.h5", standardize=False)
    with h5py.File(dump / "era5.h5") as file:
        raw = file["latents"][100:103]
    np.testing.assert_array_equal(archive.states(archive.times[100:103]), raw)
    assert archive.standardization is None


def test_dates_outside_are_refused_naming_the_range(dump):
    archive = open_archive(dump / "era5.h5")
    message = one_line(lambda: archive.require_covers(datetime(2000, 5, 30), 72, 1))
    assert "start_dates" in message and "2000-03-01 00h to 2000-05-31 23h" in message


def test_missing_stats_is_one_line(tmp_path, dump):
    (tmp_path / "era5.h5").write_bytes((dump / "era5.h5").read_bytes())
    message = one_line(lambda: open_archive(tmp_path / "era5.h5"))
    assert "stats.pth" in message and "is missing" in message and "standardize" in message


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        ({"mean": torch.zeros(3)}, "must hold 'mean' and 'std'"),
        ({"mean": torch.zeros(4), "std": torch.ones(4)}, "must be (3,)"),
        ({"mean": torch.zeros(3), "std": torch.zeros(3)}, "positive"),
    ],
)
def test_bad_stats_are_refused(tmp_path, dump, stats, expected):
    (tmp_path / "era5.h5").write_bytes((dump / "era5.h5").read_bytes())
    torch.save(stats, tmp_path / "stats.pth")
    assert expected in one_line(lambda: open_archive(tmp_path / "era5.h5"))


class Payload:
    def __reduce__(self):
        return (print, ("code ran from stats.pth",))


def test_stats_with_pickled_code_are_refused(tmp_path, dump, capsys):
    (tmp_path / "era5.h5").write_bytes((dump / "era5.h5").read_bytes())
    (tmp_path / "stats.pth").write_bytes(pickle.dumps({"mean": Payload(), "std": 1}))
    assert "not a readable torch file" in one_line(lambda: open_archive(tmp_path / "era5.h5"))
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("datasets", "expected"),
    [
        ({"latents": np.zeros((4, 2), np.float32)}, "no dataset 'dates'"),
        (
            {"latents": np.zeros((4, 2), np.float32), "dates": np.zeros((3, 4), np.int64)},
            "4 rows and 'dates' 3",
        ),
        (
            {
                "latents": np.zeros((2, 2), np.float32),
                "dates": np.array([[2000, 2, 30, 0], [2000, 3, 1, 0]]),
            },
            "a day its month does not have",
        ),
        (
            {
                "latents": np.zeros((2, 2), np.float32),
                "dates": np.array([[2000, 1, 1, 0], [2000, 1, 1, 25]]),
            },
            "not a (year, month, day, hour) date",
        ),
    ],
)
def test_malformed_files_are_one_line(tmp_path, datasets, expected):
    with h5py.File(tmp_path / "bad.h5", "w") as file:
        for name, data in datasets.items():
            file.create_dataset(name, data=data)
    message = one_line(lambda: open_hdf5_archive(tmp_path / "bad.h5", standardize=False))
    assert expected in message


def test_irregular_dates_are_refused(tmp_path):
    with h5py.File(tmp_path / "gap.h5", "w") as file:
        file.create_dataset("latents", data=np.zeros((3, 2), np.float32))
        file.create_dataset("dates", data=np.array([[2000, 1, 1, 0], [2000, 1, 1, 1], [2000, 1, 1, 5]]))
    assert "irregular time axis" in one_line(
        lambda: open_hdf5_archive(tmp_path / "gap.h5", standardize=False)
    )


def test_a_file_that_is_not_hdf5_or_zarr_is_refused(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    assert "junk.h5" in one_line(lambda: open_archive(tmp_path / "junk.h5"))
