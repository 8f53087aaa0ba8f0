r"""The two samples of the "did the denoiser learn?" verdict: the model's own blankets and the
archive's windows at the same dates and hours.

For each start date :math:`d` of a run, with :math:`K` the model's blanket size and valid times
:math:`t_k = d + k\,dt`, :math:`k < K`:

- model blankets: ``members`` trajectories of exactly :math:`T = K` states sampled with the
  run's sampler, steps, precision and fold (:meth:`priorflow.plan.SamplingSpec.sample`). A
  trajectory of ``K`` states is one blanket: no composition, the denoiser's own prior. Member
  ``j`` draws its noise from :func:`~priorflow.core.seeds.job_seed` of (run seed, ``K``, date,
  ``CHECK_MEMBER_OFFSET + j``), distinct from every member of the run;
- archive windows: the archive's ``K`` states at :math:`t_k + \Delta`, for every whole-day shift
  :math:`\Delta = \delta` days, :math:`|\delta| \le` ``window_days``, in every year of the
  archive (the same hours of the day, the same season), that the archive holds whole. Their
  day shifts :math:`\delta` (from the date's day in its own year, in days) let the verdict remove
  the seasonal drift of the mean across the window (:mod:`priorflow.evaluation.blanket_stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from priorflow.core.seeds import job_seed
from priorflow.errors import ArchiveError

CHECK_MEMBER_OFFSET = 1_000_000


@dataclass
class BlanketSamples:
    """The model's blankets and the archive's windows, channel first.

    Attributes:
        starts: the start dates ``(D,)``.
        model: ``(D, M, K, C, *sp)`` float64 model blankets.
        archive: per date ``(N_d, K, C, *sp)`` float64 archive windows.
        shifts: per date ``(N_d,)`` day shifts :math:`\\delta` (float days) of the windows.
        blanket_size, dt_hours: ``K`` and the hours between states.
    """

    starts: list[datetime]
    model: np.ndarray
    archive: list[np.ndarray]
    shifts: list[np.ndarray]
    blanket_size: int
    dt_hours: int


def archive_windows(
    archive: Any,
    start: datetime,
    length: int,
    dt_hours: int,
    window_days: float,
    step_days: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Archive windows of ``length`` states at the hours of ``start`` within ``window_days`` of
    its day of the year, every ``step_days`` days, in every year the archive covers:
    ``(N, length, *S)`` float32 and the day shifts ``(N,)``. Windows longer than a day overlap
    unless ``step_days`` covers their span; overlapping windows are not independent units.

    Raises:
        ArchiveError: fewer than 8 windows (names the date, the window and the archive).
    """
    span = np.timedelta64(int(dt_hours) * (int(length) - 1), "h")
    first, last = archive.times[0], archive.times[-1]
    offsets = np.arange(length) * np.timedelta64(int(dt_hours), "h")
    times, shifts = [], []
    limit = int(window_days)
    for year in range(archive.start.year, archive.end.year + 1):
        try:
            base = start.replace(year=year)
        except ValueError:  # 29 February in a common year
            base = start.replace(year=year, day=28)
        for day in range(-limit, limit + 1):
            if day % step_days:
                continue
            t0 = np.datetime64(base + timedelta(days=day), "ns")
            if t0 < first or t0 + span > last:
                continue
            times.append(t0 + offsets)
            shifts.append(float(day))
    if len(times) < 8:
        raise ArchiveError(
            f"check: only {len(times)} archive windows of {length} states at the hours of "
            f"{start:%Y-%m-%d %Hh} lie within {window_days} days of its day of the year (8 "
            f"needed); archive {archive.path} covers {archive.range_label}; use a longer "
            "archive, a larger check.blanket_window_days, or check.learned=false (then the"
            " composed run's verdict gates)"
        )
    stacked = np.stack(times)
    states = archive.states(stacked.reshape(-1)).reshape(len(times), length, *archive.state_shape)
    return states, np.asarray(shifts)


def channel_axis(state_dims: Sequence[str]) -> int:
    """The channel axis of a state: the dimension named ``channel``, else the first."""
    return list(state_dims).index("channel") if "channel" in state_dims else 0


def sample_blankets(
    model: Any,
    spec: Any,
    archive: Any,
    starts: Sequence[datetime],
    *,
    members: int,
    window_days: float,
    progress: Callable[[str], None] | None = None,
) -> BlanketSamples:
    """Sample ``members`` blankets of the model per start date (one batch per date) and read the
    archive's windows at the same dates and hours; see the module docstring.

    Arguments:
        model: the loaded model (a :class:`~priorflow.core.generate.SamplingModel`).
        spec: the run's :class:`~priorflow.plan.SamplingSpec` (sampler, steps, precision...).
        archive: the opened latent archive.
        starts: the run's start dates.
        members: model blankets per start date.
        window_days: archive windows within this many days of the date's day of the year.
        progress: called with a short line per date.
    """
    say = progress or (lambda line: None)
    K, dt = int(model.blanket_size), int(model.dt_hours)
    axis = channel_axis(getattr(archive, "state_dims", ()))
    blankets, windows, shifts = [], [], []
    for start in starts:
        say(f"blankets: sampling {members} blankets of {K} states at {start:%Y-%m-%d %Hh}")
        seeds = [job_seed(spec.seed, K, start, CHECK_MEMBER_OFFSET + j) for j in range(members)]
        out = spec.sample(model, K, [start] * members, seeds)
        x = np.stack([t.latent.numpy() for t in out]).astype(np.float64)  # (M, K, *S)
        blankets.append(np.moveaxis(x, 2 + axis, 2))
        states, days = archive_windows(archive, start, K, dt, window_days)
        windows.append(np.moveaxis(states.astype(np.float64), 2 + axis, 2))
        shifts.append(days)
    return BlanketSamples(list(starts), np.stack(blankets), windows, shifts, K, dt)
