r"""Baselines and ground truth from the latent archive, shaped like a run's ensembles.

For one start date :math:`d` and a trajectory of ``T`` states ``dt`` hours apart (valid times
:math:`t_k = d + k\,dt`):

- ground truth: the archive's states at :math:`t_k`, ``(T, *S)``;
- persistence: the start state :math:`x(d)` repeated, ``(1, T, *S)`` (one deterministic member);
- climatology ensemble: ``M`` archive trajectories at the same calendar hours of other days and
  years, member ``m`` being the states at :math:`t_k + \Delta_m` for a shift :math:`\Delta_m` of
  whole days (other years first, then other days of the same year far enough not to overlap the
  truth), at most ``window_days`` from the same day of the year (:func:`climatology_shifts`).
  The members are real archive trajectories, so they carry the archive's autocorrelation and
  spectrum and serve as the reference for both;
- climatological moments: mean and standard deviation at :math:`t_k` of all archive states at
  the same hour of day whose day of the year lies within ``window_days`` (circularly), over all
  years: the mean is :meth:`priorflow.data.archive.LatentArchive.climatology`'s.

Memory: one start date at a time; the moments read the archive in blocks of ``block`` states.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from priorflow.errors import ArchiveError

__all__ = [
    "DateBaselines",
    "climatology_ensemble",
    "climatology_moments",
    "climatology_shifts",
    "date_baselines",
    "ground_truth",
    "persistence_ensemble",
]

_HOUR = np.timedelta64(1, "h")


def _times(start: datetime, length: int, dt_hours: int) -> np.ndarray:
    return np.datetime64(start, "ns") + np.arange(length) * np.timedelta64(int(dt_hours), "h")


def ground_truth(archive: object, valid_times: np.ndarray) -> np.ndarray:
    """The archive's states at ``valid_times`` (any shape ``(*)``): float32 ``(*, *S)``.

    Raises :class:`ArchiveError` naming the first valid time the archive does not hold.
    """
    return archive.states(valid_times)


def persistence_ensemble(
    archive: object, start: datetime, length: int, members: int = 1
) -> np.ndarray:
    """The start state repeated: a read-only float32 view ``(members, length, *S)``."""
    state = archive.states(np.array([np.datetime64(start, "ns")]))[0]
    return np.broadcast_to(state, (members, length, *state.shape))


def _day_of_year(times: np.ndarray) -> np.ndarray:
    from priorflow.data.synthetic import year_progress

    return year_progress(times) * 365.25


def climatology_shifts(
    archive: object,
    start: datetime,
    length: int,
    dt_hours: int,
    members: int,
    window_days: float = 15,
    separation_days: float = 5,
) -> list[timedelta]:
    r"""``members`` shifts :math:`\Delta` such that the trajectory at :math:`t_k + \Delta` is in
    the archive, at the same hours of the day, within ``window_days`` of the same day of year.

    Candidates are whole-year shifts (same calendar day, 29 February skipped) plus day shifts
    :math:`|\delta| \le` ``window_days``; a shift inside the truth's own year must move the
    trajectory clear of the truth (by its span plus one day). They are taken in order of
    :math:`|\delta|`, then the number of years, then earlier first, keeping members more than
    the span plus ``separation_days`` apart from each other (so that they are independent: two
    members one day apart would share their anomalies at lags near 24 h); when too few such
    remain, the nearest others fill up. Deterministic.

    Raises:
        ArchiveError: fewer than ``members`` candidates (names the date, window and archive).
    """
    span = timedelta(hours=int(dt_hours) * (int(length) - 1))
    first, last = archive.times[0], archive.times[-1]
    years = range(archive.start.year - start.year, archive.end.year - start.year + 1)
    candidates = []
    limit = int(window_days)
    for year in years:
        try:
            base = start.replace(year=start.year + year)
        except ValueError:  # 29 February in a common year
            continue
        for day in range(-limit, limit + 1):
            shifted = base + timedelta(days=day)
            shift = shifted - start
            if year == 0 and abs(shift) <= span + timedelta(days=1):
                continue
            lo, hi = np.datetime64(shifted, "ns"), np.datetime64(shifted + span, "ns")
            if lo < first or hi > last:
                continue
            candidates.append(((abs(day), abs(year), shift), shift))
    candidates.sort(key=lambda item: (item[0][0], item[0][1], item[0][2]))
    ordered = [shift for _, shift in candidates]
    # Members far apart from each other first (independent members), then the rest.
    gap = span + timedelta(days=float(separation_days))
    chosen: list[timedelta] = []
    for shift in ordered:
        if len(chosen) < members and all(abs(shift - other) > gap for other in chosen):
            chosen.append(shift)
    for shift in ordered:
        if len(chosen) < members and shift not in chosen:
            chosen.append(shift)
    if len(chosen) < members:
        raise ArchiveError(
            f"climatology: only {len(candidates)} archive trajectories of {length} states at the "
            f"hours of {start:%Y-%m-%d %Hh} lie within {window_days} days of its day of the year "
            f"({members} members needed); archive {archive.path} covers {archive.range_label}; "
            "use a longer archive or a larger check.window_days"
        )
    return chosen


def climatology_ensemble(
    archive: object,
    start: datetime,
    length: int,
    dt_hours: int,
    members: int,
    window_days: float = 15,
) -> np.ndarray:
    """Climatology members for one start date: float32 ``(members, length, *S)``; see
    :func:`climatology_shifts`."""
    times = _times(start, length, dt_hours)
    shifts = climatology_shifts(archive, start, length, dt_hours, members, window_days)
    member_times = np.stack([times + np.timedelta64(s) for s in shifts])
    return archive.states(member_times.reshape(-1)).reshape(members, length, *archive.state_shape)


def climatology_moments(
    archive: object, times: np.ndarray, window_days: float = 15, block: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Climatological mean, standard deviation (ddof 1) and pool size at ``times`` ``(n,)``.

    Returns float64 ``(n, *S)``, ``(n, *S)`` and int ``(n,)``. The pool of a time is every
    archive state at the same hour of day within ``window_days`` of its day of the year (see the
    module docstring); states are read in blocks of ``block``, so memory holds one block and the
    sums, not the pool.
    """
    times = np.asarray(times, dtype="datetime64[ns]").reshape(-1)
    all_day = _day_of_year(archive.times)
    all_hour = (archive.times - archive.times.astype("datetime64[D]")) // _HOUR
    day = _day_of_year(times)
    hour = (times - times.astype("datetime64[D]")) // _HOUR
    keys, inverse = np.unique(
        np.stack([np.round(day, 6), hour], axis=1), axis=0, return_inverse=True
    )
    inverse = inverse.reshape(-1)
    member = np.zeros((len(keys), len(archive.times)), dtype=bool)
    for k, (d, h) in enumerate(keys):
        distance = np.abs(all_day - d)
        distance = np.minimum(distance, 365.25 - distance)
        member[k] = (all_hour == h) & (distance <= window_days)
    count = member.sum(axis=1)
    if np.any(count < 2):
        k = int(np.argmax(count < 2))
        raise ArchiveError(
            f"climatology: fewer than 2 archive states at hour {int(keys[k][1])} within "
            f"{window_days} days of day {keys[k][0]:.0f} of the year; archive {archive.path} "
            f"covers {archive.range_label}; use a longer archive or a larger check.window_days"
        )
    needed = np.flatnonzero(member.any(axis=0))
    shape = tuple(archive.state_shape)
    total = np.zeros((len(keys), *shape))
    square = np.zeros((len(keys), *shape))
    for offset in range(0, len(needed), block):
        rows = needed[offset : offset + block]
        data = archive.states(archive.times[rows]).astype(np.float64)
        weights = member[:, rows].astype(np.float64)  # (keys, rows)
        total += np.tensordot(weights, data, axes=(1, 0))
        square += np.tensordot(weights, data * data, axes=(1, 0))
    shape_count = count.reshape(-1, *([1] * len(shape)))
    mean = total / shape_count
    variance = np.maximum(square - shape_count * mean * mean, 0) / (shape_count - 1)
    return mean[inverse], np.sqrt(variance[inverse]), count[inverse]


@dataclass
class DateBaselines:
    """Truth and baselines for one start date (``T`` states, ``M`` members).

    Attributes:
        truth: ``(T, *S)`` float32.
        climatology: ``(M, T, *S)`` float32 climatology members.
        persistence: ``(1, T, *S)`` float32 (read-only view).
        clim_mean, clim_std: ``(T, *S)`` float64 climatological moments at the valid times.
        clim_count: ``(T,)`` archive states in each pool.
    """

    truth: np.ndarray
    climatology: np.ndarray
    persistence: np.ndarray
    clim_mean: np.ndarray
    clim_std: np.ndarray
    clim_count: np.ndarray


def date_baselines(
    archive: object,
    start: datetime,
    length: int,
    dt_hours: int,
    members: int,
    window_days: float = 15,
) -> DateBaselines:
    """Everything :mod:`priorflow.evaluation.check` compares one start date's members with."""
    times = _times(start, length, dt_hours)
    mean, std, count = climatology_moments(archive, times, window_days)
    return DateBaselines(
        truth=ground_truth(archive, times),
        climatology=climatology_ensemble(archive, start, length, dt_hours, members, window_days),
        persistence=persistence_ensemble(archive, start, length, 1),
        clim_mean=mean,
        clim_std=std,
        clim_count=count,
    )
