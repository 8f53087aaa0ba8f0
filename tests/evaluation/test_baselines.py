"""Baselines and ground truth from a real (synthetic) archive."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from priorflow.core.dates import year_progress
from priorflow.data.archive import open_archive
from priorflow.errors import ArchiveError
from priorflow.evaluation import baselines
from tests._check_runs import shared_archive

START = datetime(2000, 5, 10, 6)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return open_archive(shared_archive(tmp_path_factory))


def _times(start, length, dt=1):
    return np.datetime64(start, "ns") + np.arange(length) * np.timedelta64(dt, "h")


def test_truth_and_persistence(archive):
    times = _times(START, 12)
    truth = baselines.ground_truth(archive, times)
    assert truth.shape == (12, *archive.state_shape)
    index = int((np.datetime64(START, "ns") - archive.times[0]) / np.timedelta64(1, "h"))
    np.testing.assert_array_equal(truth, archive.load()[index : index + 12])
    persistence = baselines.persistence_ensemble(archive, START, 12, members=3)
    assert persistence.shape == (3, 12, *archive.state_shape)
    np.testing.assert_array_equal(persistence[2, 11], truth[0])
    with pytest.raises(ArchiveError, match="2001-01-01"):
        baselines.ground_truth(archive, _times(datetime(2000, 12, 31, 12), 24))


def test_climatology_shifts_are_same_hour_other_days_in_the_window(archive):
    length = 48
    shifts = baselines.climatology_shifts(archive, START, length, 1, 4, window_days=15)
    assert shifts == baselines.climatology_shifts(archive, START, length, 1, 4, window_days=15)
    assert len(set(shifts)) == 4
    span = timedelta(hours=length - 1)
    for shift in shifts:
        assert shift % timedelta(days=1) == timedelta(0)  # same hours of the day
        assert timedelta(0) < abs(shift) <= timedelta(days=15)  # one-year archive: same year
        assert abs(shift) > span + timedelta(days=1)  # clear of the truth
    for a in shifts:  # members independent of each other
        for b in shifts:
            assert a == b or abs(a - b) > span + timedelta(days=5)


def test_climatology_ensemble_members_are_archive_trajectories(archive):
    members = baselines.climatology_ensemble(archive, START, 24, 1, 3)
    shifts = baselines.climatology_shifts(archive, START, 24, 1, 3)
    assert members.shape == (3, 24, *archive.state_shape)
    for m, shift in enumerate(shifts):
        expected = archive.states(_times(START + shift, 24))
        np.testing.assert_array_equal(members[m], expected)


def test_too_few_climatology_members_is_an_archive_error(archive):
    with pytest.raises(ArchiveError, match=r"window_days.*|members needed"):
        baselines.climatology_shifts(archive, START, 48, 1, 40, window_days=3)


def test_climatology_moments_match_the_archive_pool(archive):
    times = _times(START, 30)
    mean, std, count = baselines.climatology_moments(archive, times, window_days=10, block=100)
    np.testing.assert_allclose(mean, archive.climatology(times, window_days=10), atol=1e-5)
    # one time by hand: every state at 07h within 10 days of its day of the year
    t = times[1]
    day = year_progress(archive.times) * 365.25
    hours = (archive.times - archive.times.astype("datetime64[D]")) // np.timedelta64(1, "h")
    target = year_progress(np.array([t]))[0] * 365.25
    pool = np.flatnonzero((hours == 7) & (np.abs(day - target) <= 10))
    assert count[1] == len(pool) == 21
    states = archive.states(archive.times[pool]).astype(np.float64)
    np.testing.assert_allclose(std[1], states.std(axis=0, ddof=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mean[1], states.mean(axis=0), rtol=1e-6, atol=1e-6)


def test_date_baselines_shapes(archive):
    base = baselines.date_baselines(archive, START, 24, 1, 2)
    S = archive.state_shape
    assert base.truth.shape == (24, *S)
    assert base.climatology.shape == (2, 24, *S)
    assert base.persistence.shape == (1, 24, *S)
    assert base.clim_mean.shape == base.clim_std.shape == (24, *S)
    assert base.clim_count.shape == (24,)
    # the climatological std of the synthetic world is near its anomaly std
    assert 0.6 < float(base.clim_std.mean()) < 1.0
