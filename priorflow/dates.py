"""Start dates, trajectory sizes and per-state timestamps.

State ``k`` of a trajectory that starts at date ``d``, hour ``h`` lies at ``d h:00 + k dt``
hours. The denoiser receives it as ``(year, month, day, hour)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

import numpy as np
import torch

from priorflow.errors import ConfigError

_START_DATE = re.compile(
    r"^\s*(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:(?:\s+(?P<h>\d{1,2})h)|(?:[T\s](?P<hh>\d{1,2})(?::00(?::00)?)?))?\s*$"
)
_SIZE_TOKEN = re.compile(r"^\s*(?P<lo>\d+)\s*(?:-\s*(?P<hi>\d+)\s*)?$")


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


def parse_trajectory_sizes(
    text: str | int | Iterable[int], field: str = "trajectory_sizes"
) -> list[int]:
    """Parse ``"72"``, ``"24,48"`` or an inclusive range ``"24-26"`` (mixable: ``"12,24-26"``).

    Returns the sorted, de-duplicated sizes (number of states). Raises :class:`ConfigError`.
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
