"""Metrics against hand-computed values on small fixed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from priorflow.core.blanket import BlanketPlan
from priorflow.evaluation import metrics


def test_crps_of_a_known_ensemble():
    # members 0, 1, 3 and truth 2: mean |x - y| = 4/3, sum_ij |xi - xj| = 12
    ensemble = np.array([0.0, 1.0, 3.0])[:, None]
    truth = np.array([2.0])
    assert metrics.crps_ensemble(ensemble, truth)[0] == pytest.approx(4 / 3 - 12 / 18)  # 2/3
    assert metrics.crps_ensemble(ensemble, truth, fair=True)[0] == pytest.approx(4 / 3 - 1)


def test_crps_is_the_integral_of_the_squared_cdf_difference():
    # the same ensemble by the definition: integral of (F(z) - 1{z >= y})^2 dz
    z = np.linspace(-1, 5, 600001)
    F = (np.array([0.0, 1.0, 3.0])[:, None] <= z[None]).mean(axis=0)
    integral = np.trapezoid((F - (z >= 2.0)) ** 2, z)
    value = metrics.crps_ensemble(np.array([[0.0], [1.0], [3.0]]), np.array([2.0]))[0]
    assert value == pytest.approx(integral, abs=1e-4)


def test_crps_matches_the_pairwise_formula_and_one_member_is_the_absolute_error():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 7, 3)), rng.normal(size=(7, 3))
    pairs = np.abs(x[:, None] - x[None, :]).sum(axis=(0, 1))
    skill = np.abs(x - y).mean(axis=0)
    np.testing.assert_allclose(metrics.crps_ensemble(x, y), skill - pairs / 50)
    np.testing.assert_allclose(metrics.crps_ensemble(x, y, fair=True), skill - pairs / 40)
    np.testing.assert_allclose(metrics.crps_ensemble(x[:1], y), np.abs(x[0] - y))
    np.testing.assert_allclose(metrics.crps_ensemble(x[:1], y, fair=True), np.abs(x[0] - y))


def test_spread_skill_ratio_has_the_finite_ensemble_factor():
    assert metrics.spread_skill_ratio(1.0, 1.0, 4) == pytest.approx(math.sqrt(5 / 4))
    assert metrics.spread_skill_ratio(0.5, 2.0, 1) == pytest.approx(math.sqrt(2) / 4)
    assert np.isnan(metrics.spread_skill_ratio(1.0, 0.0, 4))


def test_spread_skill_ratio_is_one_for_a_perfect_small_ensemble():
    # truth and 3 members drawn from the same distribution: without the factor sqrt(3/4)
    rng = np.random.default_rng(1)
    members, truth = rng.normal(size=(3, 200000)), rng.normal(size=200000)
    rmse = np.sqrt(((members.mean(axis=0) - truth) ** 2).mean())
    spread = np.sqrt(members.var(axis=0, ddof=1).mean())
    assert metrics.spread_skill_ratio(spread, rmse, 3) == pytest.approx(1.0, abs=0.01)
    assert spread / rmse == pytest.approx(math.sqrt(3 / 4), abs=0.01)


def test_lag_correlation_by_hand():
    a = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)  # (N, T, C)
    sums = metrics.lag_sums(a, [1, 2])
    assert sums[:, 0, :2, 0].sum(axis=1).tolist() == [8.0, 5.0, 13.0]
    acf = metrics.lag_correlation(sums)
    assert acf[0, 0] == pytest.approx(8 / math.sqrt(65))
    assert acf[1, 0] == pytest.approx(3 / math.sqrt(9))


def test_autocorrelation_of_an_ar1_series():
    rng = np.random.default_rng(2)
    phi, N, T = 0.7, 4000, 40
    x = np.zeros((N, T))
    x[:, 0] = rng.normal(size=N)
    for t in range(1, T):
        x[:, t] = phi * x[:, t - 1] + math.sqrt(1 - phi**2) * rng.normal(size=N)
    # two "members" per series pair: anomalies about their mean keep the lag correlation
    ensemble = x.reshape(2, N // 2, T).transpose(0, 2, 1)[:, :, None, :]  # (M, T, C, P)
    anomalies = metrics.ensemble_anomalies(ensemble)
    acf = metrics.lag_correlation(metrics.lag_sums(anomalies, [1, 2, 3]))[:, 0]
    np.testing.assert_allclose(acf, [phi, phi**2, phi**3], atol=0.015)


def test_ensemble_anomalies_remove_any_mean_and_keep_the_variance():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 50000)) + 7.0
    a = metrics.ensemble_anomalies(x)
    assert abs(a.mean()) < 1e-12
    assert a.var() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(metrics.ensemble_anomalies(x[:1], 7.0), x[:1] - 7.0)


@pytest.mark.parametrize(
    ("T", "K", "O", "fold", "expected"),
    [
        (20, 8, 4, "symmetrical", [6, 10, 14]),
        (20, 8, 4, "causal", [8, 12, 16]),
        (20, 8, 4, "average", [4, 8, 12, 16]),
        (24, 8, 0, "symmetrical", [8, 16]),
        (8, 8, 4, "symmetrical", []),
        (18, 8, 4, "symmetrical", [6, 10, 14]),
    ],
)
def test_seam_boundaries(T, K, O, fold, expected):
    assert metrics.seam_boundaries(T, K, O, fold).tolist() == expected


@pytest.mark.parametrize("fold", ["symmetrical", "causal"])
@pytest.mark.parametrize(("T", "K", "O"), [(72, 8, 4), (30, 8, 6), (25, 6, 1), (40, 8, 0)])
def test_seam_boundaries_agree_with_the_blanket_fold(T, K, O, fold):
    # a seam is where the owning blanket of consecutive states changes
    owner = BlanketPlan(T, K, O).fold_index(fold)[:T] // K
    expected = (torch.nonzero(owner[1:] != owner[:-1]).flatten() + 1).tolist()
    assert metrics.seam_boundaries(T, K, O, fold).tolist() == expected


def test_crossing_mask():
    mask = metrics.crossing_mask(10, [1, 2], [4])
    assert np.flatnonzero(mask[0]).tolist() == [3]
    assert np.flatnonzero(mask[1]).tolist() == [2, 3]


def test_seam_index_of_a_trajectory_with_jumps_at_the_seams():
    rng = np.random.default_rng(4)
    phi, N, T, seams = 0.9, 3000, 24, [6, 10, 14, 18]
    x = np.zeros((N, T, 1))
    x[:, 0] = rng.normal(size=(N, 1))
    for t in range(1, T):
        x[:, t] = phi * x[:, t - 1] + math.sqrt(1 - phi**2) * rng.normal(size=(N, 1))
    clean = metrics.seam_index(metrics.increment_sums(x), seams)[0]
    assert clean == pytest.approx(1.0, abs=0.06)
    jumped = x.copy()
    for p in seams:  # a jump of +-0.5 at every seam: E[step^2] = 2(1 - phi) + 0.25 there
        jumped[:, p:] += 0.5 * rng.choice([-1.0, 1.0], size=(N, 1, 1))
    index = metrics.seam_index(metrics.increment_sums(jumped), seams)[0]
    assert index == pytest.approx((0.2 + 0.25) / 0.2, rel=0.08)
    assert np.isnan(metrics.seam_index(metrics.increment_sums(x), [])[0])


def test_spectrum_of_a_sine_field():
    n, k0, amplitude = 32, 3, 2.0
    x = np.arange(n)
    field = np.tile(amplitude * np.sin(2 * np.pi * k0 * x / n), (5, 1))  # (rows, n)
    power = metrics.zonal_spectrum(field).mean(axis=0)
    assert power.shape == (n // 2 + 1,)
    assert power[k0] == pytest.approx(amplitude**2 / 2)
    assert np.delete(power, k0).max() < 1e-20


def test_spectrum_sums_to_the_mean_square():
    rng = np.random.default_rng(5)
    for n in (16, 17):
        field = rng.normal(size=(3, n)) + 0.3
        np.testing.assert_allclose(metrics.zonal_spectrum(field).sum(axis=-1), (field**2).mean(-1))


def test_spectrum_shape_error():
    rng = np.random.default_rng(6)
    q = rng.uniform(0.1, 1, size=17)
    assert metrics.spectrum_shape_error(3 * q, q) == pytest.approx(0.0, abs=1e-12)
    tilted = q * 2.0 ** np.where(np.arange(17) > 8, 1.0, 0.0)
    assert metrics.spectrum_shape_error(tilted, q) > 0.3


def test_diurnal_harmonic_amplitude_and_phase():
    hours = np.tile(np.arange(24), 3).astype(float)
    design = metrics.diurnal_design(hours)
    values = 1.0 + 2.0 * np.cos(metrics.OMEGA * (hours - 15.0))
    z = metrics.diurnal_fit(design.T @ design, design.T @ values[:, None])
    assert abs(z[0]) == pytest.approx(2.0)
    assert (np.angle(z[0]) / metrics.OMEGA) % 24 == pytest.approx(15.0)
    later = 1.0 + 1.0 * np.cos(metrics.OMEGA * (hours - 17.0))
    z_later = metrics.diurnal_fit(design.T @ design, design.T @ later[:, None])
    amplitude, reference, ratio, phase = metrics.diurnal_summary(z_later[None], z[None])
    assert amplitude[0] == pytest.approx(1.0) and reference[0] == pytest.approx(2.0)
    assert ratio[0] == pytest.approx(0.5)
    assert phase[0] == pytest.approx(2.0)
    # noise energy is taken off the amplitude
    _, _, ratio, _ = metrics.diurnal_summary(z[None], z[None], noise=np.array([3.0]))
    assert ratio[0] == pytest.approx(0.5)


def test_diurnal_fit_needs_three_hours():
    design = metrics.diurnal_design(np.array([0.0, 12.0, 0.0, 12.0]))
    z = metrics.diurnal_fit(design.T @ design, design.T @ np.ones((4, 2)))
    assert np.isnan(z).all()
