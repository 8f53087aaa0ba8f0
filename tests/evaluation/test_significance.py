"""Standard errors and thresholds: the Student quantile, Bonferroni, the stratified bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from priorflow.evaluation.significance import (
    bootstrap_se,
    stratified_means,
    student_quantile,
    z_threshold,
)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [(0.975, np.inf, 1.95996), (0.975, 10, 2.22814), (0.999, 30, 3.38518)],
)
def test_student_quantile(p, df, expected):
    assert student_quantile(p, df) == pytest.approx(expected, abs=3e-3)


@pytest.mark.parametrize(("tail", "df"), [(5e-5, 30), (5e-5, 90), (1e-3, 8)])
def test_student_quantile_has_its_tail(tail, df):
    """The tail beyond the quantile, integrated numerically from Student's density."""
    from math import gamma, pi, sqrt

    q = student_quantile(1 - tail, df)
    x = np.linspace(q, q + 200, 2_000_001)
    density = (
        gamma((df + 1) / 2) / (sqrt(df * pi) * gamma(df / 2)) * (1 + x**2 / df) ** (-(df + 1) / 2)
    )
    assert np.trapezoid(density, x) == pytest.approx(tail, rel=0.03)


def test_bonferroni_threshold():
    assert z_threshold(0.05, 1) == pytest.approx(1.95996, abs=1e-4)
    assert z_threshold(0.01, 100) == pytest.approx(student_quantile(1 - 0.01 / 200, np.inf))
    assert z_threshold(0.01, 100, df=20) > z_threshold(0.01, 100)


def test_bootstrap_se_of_a_mean_is_sd_over_root_n():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * np.array([1.0, 2.0, 0.5])
    strata = np.zeros(200, dtype=int)
    se = bootstrap_se(x, strata, lambda m: m, resamples=2000)
    assert se == pytest.approx(x.std(axis=0, ddof=1) / np.sqrt(200), rel=0.08)


def test_strata_weigh_the_same_and_are_resampled_apart():
    x = np.concatenate([np.zeros(10), np.ones(90)])[:, None]
    strata = np.concatenate([np.zeros(10), np.ones(90)])
    assert stratified_means(x, strata)[0] == pytest.approx(0.5)
    # within each stratum the values are constant: resampling them changes nothing
    assert bootstrap_se(x, strata, lambda m: m)[0] == pytest.approx(0.0)


def test_z_of_a_right_model_is_standard_normal():
    """Two samples of the same distribution: z of a ratio statistic (a correlation) through
    the bootstrap SE has unit variance, so the thresholds hold their rate."""
    rng = np.random.default_rng(1)
    zs = []
    for _ in range(200):
        a, b = rng.normal(size=(2, 80, 2))
        b[:, 1] += 0.5 * b[:, 0]
        a[:, 1] += 0.5 * a[:, 0]

        def features(v):
            return np.stack([v[:, 0] * v[:, 1], v[:, 0] ** 2, v[:, 1] ** 2], axis=1)

        def corr(m):
            return m[:, 0] / np.sqrt(m[:, 1] * m[:, 2])

        fa, fb, s = features(a), features(b), np.zeros(80)
        diff = corr(fa.mean(0)[None]) - corr(fb.mean(0)[None])
        se = np.hypot(bootstrap_se(fa, s, corr, 200, 0), bootstrap_se(fb, s, corr, 200, 1))
        zs.append(float(diff[0] / se))
    assert np.std(zs) == pytest.approx(1.0, abs=0.15)


def test_the_bootstrap_of_few_centred_members_is_stretched():
    """4 members per date, centred on their mean: the variance of the mean of their squared
    anomalies is 2/(M-1) (Gaussian); the plain bootstrap gives (M-2)/M of it, fitted=1 all."""
    rng = np.random.default_rng(3)
    M, D = 4, 2000
    x = rng.normal(size=(D, M))
    a = (x - x.mean(axis=1, keepdims=True)) * np.sqrt(M / (M - 1))
    features = (a**2).reshape(-1, 1)
    strata = np.repeat(np.arange(D), M)
    exact = np.sqrt(2 / (M - 1) / D)  # the SE of the mean over D dates
    plain = bootstrap_se(features, strata, lambda m: m, resamples=2000)[0]
    fitted = bootstrap_se(features, strata, lambda m: m, resamples=2000, fitted=1)[0]
    assert plain == pytest.approx(exact * np.sqrt((M - 2) / M), rel=0.05)
    assert fitted == pytest.approx(exact, rel=0.05)
