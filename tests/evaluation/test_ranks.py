"""Rank histograms: flat for a model of the archive's own distribution (drift removed), U-shaped
for an under-dispersed one, dome-shaped for an over-dispersed one."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from priorflow.evaluation.blanket_samples import BlanketSamples
from priorflow.evaluation.ranks import date_rank_counts, extreme_fraction, rank_histogram

M, N, K, C, POINTS, DATES = 9, 31, 2, 2, 200, 4


def _samples(model_std: float = 1.0, drift: float = 0.0, seed: int = 0) -> BlanketSamples:
    """Independent Gaussian points; the archive's mean drifts by ``drift`` per day of shift."""
    rng = np.random.default_rng(seed)
    shifts = np.arange(N, dtype=np.float64) - N // 2
    mean = rng.standard_normal((DATES, 1, K, C, POINTS))
    model = mean + model_std * rng.standard_normal((DATES, M, K, C, POINTS))
    archive = [
        m + drift * shifts[:, None, None, None] + rng.standard_normal((N, K, C, POINTS))
        for m in mean
    ]
    starts = [datetime(2000, 3 * d + 1, 1) for d in range(DATES)]
    return BlanketSamples(starts, model, archive, [shifts] * DATES, K, 1)


def _standard_error() -> float:
    """SE of one bin's fraction for a right model: per point the members are shared by every
    window, so a point's fraction varies like the spacing of M uniform order statistics
    (Beta(1, M)) plus the binomial noise of N windows; points are independent."""
    p = 1 / (M + 1)
    per_point = M / ((M + 1) ** 2 * (M + 2)) + p * (1 - p) / N
    return float(np.sqrt(per_point / (DATES * K * POINTS)))


@pytest.mark.parametrize("drift", [0.0, 0.2])
def test_a_model_of_the_archive_distribution_gives_a_flat_histogram(drift):
    histogram = rank_histogram(_samples(drift=drift))
    assert histogram.shape == (C, M + 1)
    np.testing.assert_allclose(histogram.sum(axis=1), 1.0)
    assert np.abs(histogram - 1 / (M + 1)).max() < 5 * _standard_error()
    assert np.abs(extreme_fraction(histogram) - 2 / (M + 1)).max() < 7 * _standard_error()


def test_an_under_dispersed_model_gives_a_u_shape():
    histogram = rank_histogram(_samples(model_std=0.6))
    assert (extreme_fraction(histogram) > 1.5 * 2 / (M + 1)).all()
    assert (histogram[:, M // 2] < 1 / (M + 1)).all()


def test_an_over_dispersed_model_gives_a_dome():
    histogram = rank_histogram(_samples(model_std=1.6))
    assert (extreme_fraction(histogram) < 0.5 * 2 / (M + 1)).all()


def test_the_drift_is_removed_before_ranking():
    """Without the fit, the windows far from the date would sit outside the members."""
    samples = _samples(drift=0.2)
    flat = rank_histogram(samples)
    raw = sum(
        date_rank_counts(x, y, np.zeros(N))
        for x, y in zip(samples.model, samples.archive, strict=True)
    )
    raw = raw / raw.sum(axis=1, keepdims=True)
    assert (extreme_fraction(raw) > 2 * extreme_fraction(flat)).all()


def test_ties_are_spread_over_the_ranks_they_span():
    model = np.zeros((M, 1, 1, 1000))
    archive = np.zeros((4, 1, 1, 1000))
    counts = date_rank_counts(model, archive, np.arange(4.0))
    fractions = counts[0] / counts[0].sum()
    assert np.abs(fractions - 1 / (M + 1)).max() < 0.02
