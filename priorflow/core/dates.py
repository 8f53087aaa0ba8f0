"""Start dates, trajectory sizes, per-state timestamps and calendar helpers.

State ``k`` of a trajectory that starts at date ``d``, hour ``h`` lies at ``d h:00 + k dt``
hours. The denoiser receives it as ``(year, month, day, hour)``. The parsers of user text
(:func:`parse_start_date`, :func:`parse_trajectory_sizes`) raise a one-line
:class:`~priorflow.errors.ConfigError` that starts with the ``field`` their caller names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import torch

from priorflow.errors import ConfigError

_START_DATE = re.compile(
    r"^\s*(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:(?:\s+(?P<h>\d{1,2})h)|(?:[T\s](?P<hh>\d{1,2})(?::00(?::00)?)?))?\s*$"
)
_SIZE_TOKEN = re.compile(r"^\s*(?P<lo>\d+)\s*(?:-\s*(?P<hi>\d+)\s*)?$")
_HOUR = np.timedelta64(1, "h")
_EPOCH = np.datetime64("1970-01-01T00", "ns")


def parse_start_date(text: str | datetime, field: str = "start_dates") -> datetime:
    """Parse ``"YYYY-MM-DD Hh"``, ``"YYYY-MM-DDTHH"``, ``"YYYY-MM-DD HH:00"`` or ``"YYYY-MM-DD"``.

    Returns a naive ``datetime`` on the hour. Raises :class:`ConfigError` naming ``field``.
    """
    if isinstance(text, datetime):
        if text.minute or text.second or text.microsecond:
            raise ConfigError(f"{field}: {text!r} is not on the hour; use 'YYYY-MM-DD Hh'")
        return text.replace(tzinfo=None)
    match = _START_DATE.match(str(text))
    if not match:
        raise ConfigError(
            f"{field}: {text!r} is not a start date; use 'YYYY-MM-DD Hh' (e.g. '2000-04-03 0h')"
            " or 'YYYY-MM-DDTHH'"
        )
    hour = int(match["h"] or match["hh"] or 0)
    try:
        day = datetime.strptime(match["date"], "%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"{field}: {text!r} is not a calendar date") from None
    if hour > 23:
        raise ConfigError(f"{field}: {text!r} has hour {hour}; hours run from 0 to 23")
    return day + timedelta(hours=hour)


MAX_TRAJECTORY_SIZE = 1_000_000  # states in one trajectory
MAX_TRAJECTORY_SIZES = 1_000  # sizes in one run


def parse_trajectory_sizes(
    text: str | int | Iterable[int], field: str = "trajectory_sizes"
) -> list[int]:
    """Parse ``"72"``, ``"24,48"`` or an inclusive range ``"24-26"`` (mixable: ``"12,24-26"``).

    Returns the sorted, de-duplicated sizes (number of states), at most
    :data:`MAX_TRAJECTORY_SIZES` of them, each at most :data:`MAX_TRAJECTORY_SIZE`; the bounds
    are checked before a range is expanded. Raises :class:`ConfigError`.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{field}: {text!r} is not a size; use e.g. '72', '24,48' or '24-26'")
    if isinstance(text, int):
        tokens = [str(text)]
    elif isinstance(text, str):
        tokens = text.split(",")
    else:
        tokens = [str(t) for t in text]
    sizes: set[int] = set()
    for token in tokens:
        match = _SIZE_TOKEN.match(token)
        if not match:
            raise ConfigError(
                f"{field}: {token.strip()!r} in {text!r} is not a size; use e.g. '72', '24,48' or '24-26'"
            )
        lo = int(match["lo"])
        hi = int(match["hi"]) if match["hi"] else lo
        if lo < 1 or hi < lo:
            raise ConfigError(
                f"{field}: {token.strip()!r} is not a valid size or range; sizes are >= 1 and ranges go up"
            )
        if hi > MAX_TRAJECTORY_SIZE:
            raise ConfigError(
                f"{field}: {hi} states is more than {MAX_TRAJECTORY_SIZE:,}; sample shorter"
                " trajectories"
            )
        if len(sizes) + hi - lo + 1 > MAX_TRAJECTORY_SIZES:
            raise ConfigError(
                f"{field}: {token.strip()!r} makes more than {MAX_TRAJECTORY_SIZES} sizes; split"
                " them into several runs"
            )
        sizes.update(range(lo, hi + 1))
    if not sizes:
        raise ConfigError(f"{field}: no sizes given; use e.g. '72'")
    return sorted(sizes)


def state_times(start: datetime, length: int, dt_hours: int) -> np.ndarray:
    """The valid times of ``length`` states, ``dt_hours`` apart: ``datetime64[ns]`` of shape ``(length,)``."""
    base = np.datetime64(start.replace(tzinfo=None), "ns")
    return base + np.arange(length, dtype=np.int64) * np.timedelta64(dt_hours, "h")


def timestamps(start: datetime, length: int, dt_hours: int) -> torch.Tensor:
    """Per-state ``(year, month, day, hour)``, a ``long`` tensor of shape ``(length, 4)``."""
    times = state_times(start, length, dt_hours)
    return times_to_fields(times)


def times_to_fields(times: np.ndarray) -> torch.Tensor:
    """Convert ``datetime64`` values of any shape ``(*)`` to ``(year, month, day, hour)``, ``(*, 4)``."""
    times = np.asarray(times, dtype="datetime64[h]")
    years = times.astype("datetime64[Y]")
    months = times.astype("datetime64[M]")
    days = times.astype("datetime64[D]")
    fields = np.stack(
        [
            years.astype(np.int64) + 1970,
            (months - years).astype(np.int64) + 1,
            (days - months).astype(np.int64) + 1,
            (times - days).astype(np.int64),
        ],
        axis=-1,
    )
    return torch.from_numpy(fields)


def date_label(start: datetime) -> str:
    """Short readable label used in task names and stores: ``2000-04-03T00``."""
    return f"{start:%Y-%m-%dT%H}"


def as_times(times: Any) -> np.ndarray:
    """``datetime64`` values (or ``datetime``s, or strings) of any shape as ``datetime64[ns]``."""
    return np.asarray(times, dtype="datetime64[ns]")


def fields_to_times(fields: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(year, month, day, hour)`` fields of shape ``(*, 4)`` to ``datetime64[ns]`` of shape ``(*)``.

    The inverse of :func:`times_to_fields`.
    """
    if isinstance(fields, torch.Tensor):
        fields = fields.detach().cpu().numpy()
    f = np.asarray(fields, dtype=np.int64)
    years = (f[..., 0] - 1970).astype("datetime64[Y]")
    months = years.astype("datetime64[M]") + (f[..., 1] - 1).astype("timedelta64[M]")
    days = months.astype("datetime64[D]") + (f[..., 2] - 1).astype("timedelta64[D]")
    hours = days.astype("datetime64[h]") + f[..., 3].astype("timedelta64[h]")
    return hours.astype("datetime64[ns]")


def hours_since_epoch(times: np.ndarray) -> np.ndarray:
    """Hours since 1970-01-01T00 as float64, same shape as ``times``."""
    return (as_times(times) - _EPOCH) / _HOUR


def year_progress(times: np.ndarray) -> np.ndarray:
    r"""Fraction :math:`\tau \in [0, 1)` of the calendar year elapsed at ``times`` (leap-aware)."""
    times = as_times(times)
    start = times.astype("datetime64[Y]")
    length = (start + np.timedelta64(1, "Y")).astype("datetime64[ns]") - start.astype(
        "datetime64[ns]"
    )
    return (times - start.astype("datetime64[ns]")) / length


def hour_of_day(times: np.ndarray) -> np.ndarray:
    """UTC hour of day as float64 in ``[0, 24)``."""
    times = as_times(times)
    return (times - times.astype("datetime64[D]").astype("datetime64[ns]")) / _HOUR
