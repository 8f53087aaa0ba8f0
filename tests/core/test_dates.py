"""Start dates, trajectory sizes and per-state timestamps."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from priorflow.core.dates import (
    date_label,
    fields_to_times,
    parse_start_date,
    parse_trajectory_sizes,
    state_times,
    times_to_fields,
    timestamps,
)
from priorflow.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2000-04-03 0h", datetime(2000, 4, 3, 0)),
        ("2000-04-20 12h", datetime(2000, 4, 20, 12)),
        ("2000-04-20T12", datetime(2000, 4, 20, 12)),
        ("2000-04-20T06:00", datetime(2000, 4, 20, 6)),
        ("2000-04-20 06:00:00", datetime(2000, 4, 20, 6)),
        ("2000-04-20", datetime(2000, 4, 20)),
        (datetime(2001, 1, 1, 3), datetime(2001, 1, 1, 3)),
    ],
)
def test_start_dates(text: str, expected: datetime) -> None:
    assert parse_start_date(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2000-4-3", "is not a start date"),
        ("2000-02-30 0h", "is not a calendar date"),
        ("2000-04-03 24h", "hours run from 0 to 23"),
        ("yesterday", "use 'YYYY-MM-DD Hh'"),
        ("2000-04-03 6:30", "is not a start date"),
    ],
)
def test_bad_start_dates(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"start_dates: .*{message}"):
        parse_start_date(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72", [72]),
        (72, [72]),
        ("24,48", [24, 48]),
        ("24-26", [24, 25, 26]),
        ("48, 24-25", [24, 25, 48]),
        ([12, 12], [12]),
    ],
)
def test_trajectory_sizes(text, expected: list[int]) -> None:
    assert parse_trajectory_sizes(text) == expected


@pytest.mark.parametrize("text", ["", "0", "26-24", "a", "24-", "1.5", True, "24;48"])
def test_bad_trajectory_sizes(text) -> None:
    with pytest.raises(ConfigError, match="trajectory_sizes: ") as info:
        parse_trajectory_sizes(text)
    assert "\n" not in str(info.value)


def test_timestamps_cross_days_months_and_leap_years() -> None:
    stamps = timestamps(datetime(2000, 2, 28, 18), 4, 6).tolist()
    assert stamps == [[2000, 2, 28, 18], [2000, 2, 29, 0], [2000, 2, 29, 6], [2000, 2, 29, 12]]
    stamps = timestamps(datetime(1999, 12, 31, 23), 2, 1).tolist()
    assert stamps == [[1999, 12, 31, 23], [2000, 1, 1, 0]]
    times = state_times(datetime(2000, 1, 1), 3, 3)
    assert times.dtype == np.dtype("datetime64[ns]")
    assert str(times[-1])[:16] == "2000-01-01T06:00"
    assert date_label(datetime(2000, 4, 3)) == "2000-04-03T00"


def test_fields_to_times_inverts_times_to_fields():
    times = np.array(
        ["1999-12-31T23", "2000-02-29T05", "2000-03-01T00", "2024-07-15T12"],
        dtype="datetime64[ns]",
    )
    np.testing.assert_array_equal(fields_to_times(times_to_fields(times)), times)
    fields = timestamps(datetime(2000, 2, 28, 22), 5, 1).reshape(1, 5, 4)
    assert fields_to_times(fields).shape == (1, 5)
    assert str(fields_to_times(fields)[0, 3]) == "2000-02-29T01:00:00.000000000"
