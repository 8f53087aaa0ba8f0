r"""Rank histograms of the archive's windows among the model's own blankets (a diagnostic).

For one start date, with the model's blankets :math:`x_j`, :math:`j < M`, and the archive's
windows :math:`y_i` with day shifts :math:`\delta_i`, :math:`i < N`, all ``(K, C, *sp)``
(:class:`~priorflow.evaluation.blanket_samples.BlanketSamples`):

1. the seasonal drift across the window of days is removed per state, channel and point with the
   least-squares fit :math:`y_i \approx \beta_0 + \beta_1 \delta_i` that
   :func:`~priorflow.evaluation.blanket_stats.centre` uses: :math:`y'_i = y_i - \beta_1\delta_i`
   is the archive's value moved to the model's own valid time (:math:`\delta = 0`);
2. the rank of :math:`y'_i` at a state, channel and point is the number of members below it,

   .. math:: r_i = \#\{j : x_j < y'_i\} \in \{0, \dots, M\}

   (ties, which continuous values do not have, are broken at random);
3. the histogram of :math:`r` per channel counts every window, state, point and date, and is
   normalised to fractions :math:`h_c(r)`.

When the archive's value is another draw from the model's distribution every rank is equally
likely: :math:`h_c(r) = 1/(M+1)`. An under-dispersed model puts the archive outside its members
too often (a U shape: the two extreme bins hold more than :math:`2/(M+1)`), an over-dispersed one
too rarely (a dome), a biased one tilts the histogram.

Not a gate: every window of a date is ranked among the same ``M`` members, so the ranks of one
date are correlated and the standard error of :math:`h_c(0) + h_c(M)` is not that of independent
ranks (nor a simple bootstrap's). The learned verdict's ``std`` and ``mean`` tests judge
dispersion and bias in units of their standard errors; the histogram shows where they fail.
"""

from __future__ import annotations

import numpy as np

from priorflow.evaluation.blanket_samples import BlanketSamples

__all__ = ["date_rank_counts", "extreme_fraction", "rank_histogram"]


def _drift_removed(archive: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    r""":math:`y - \beta_1\delta` per value (the fit of the module docstring); ``archive`` as is
    when every shift is the same (no slope to fit)."""
    shifts = np.asarray(shifts, dtype=np.float64)
    if len(np.unique(shifts)) < 2:
        return archive
    N = len(shifts)
    design = np.stack([np.ones(N), shifts], axis=1)
    flat = archive.reshape(N, -1)
    beta, *_ = np.linalg.lstsq(design, flat, rcond=None)
    return (flat - shifts[:, None] * beta[1][None]).reshape(archive.shape)


def date_rank_counts(
    model: np.ndarray,
    archive: np.ndarray,
    shifts: np.ndarray,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Counts of the ranks ``0..M`` of one date's archive values among its model members.

    Arguments:
        model: ``(M, K, C, *sp)`` the model's blankets.
        archive: ``(N, K, C, *sp)`` the archive's windows.
        shifts: ``(N,)`` their day shifts (days from the model's valid times).
        rng: breaks ties (default: seeded 0).

    Returns:
        ``(C, M + 1)`` int64 counts over windows, states and points.
    """
    rng = rng or np.random.default_rng(0)
    M, C = model.shape[0], model.shape[2]
    moved = _drift_removed(np.asarray(archive, dtype=np.float64), shifts)
    members = np.asarray(model, dtype=np.float64)
    counts = np.zeros((C, M + 1), dtype=np.int64)
    for window in moved:  # one window at a time: memory (M, K, C, *sp)
        below = (members < window[None]).sum(axis=0)
        equal = (members == window[None]).sum(axis=0)
        rank = below + (rng.random(below.shape) * (equal + 1)).astype(np.int64)
        per_channel = np.moveaxis(rank, 1, 0).reshape(C, -1)
        for c in range(C):
            counts[c] += np.bincount(per_channel[c], minlength=M + 1)
    return counts


def rank_histogram(samples: BlanketSamples, seed: int = 0) -> np.ndarray:
    """The normalised rank histogram per channel over every date: ``(C, M + 1)`` fractions
    (each row sums to 1)."""
    rng = np.random.default_rng(seed)
    counts = sum(
        date_rank_counts(x, y, shifts, rng)
        for x, y, shifts in zip(samples.model, samples.archive, samples.shifts, strict=True)
    )
    return counts / counts.sum(axis=1, keepdims=True)


def extreme_fraction(histogram: np.ndarray) -> np.ndarray:
    """The fraction of ranks in the two extreme bins, ``h(0) + h(M)``, per channel ``(C,)``;
    its expectation for a model that samples the archive's distribution is ``2 / (M + 1)``."""
    return histogram[:, 0] + histogram[:, -1]
