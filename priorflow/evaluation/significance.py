r"""Thresholds from sampling theory: standard errors by bootstrap, z thresholds at a known rate.

Every criterion of the "did the denoiser learn?" verdict compares a statistic of the model's
blankets, :math:`\hat s_m`, with the same statistic of the archive's windows, :math:`\hat s_a`,
in units of the standard error of their difference,

.. math::
    z = \frac{\hat s_m - \hat s_a}{\sqrt{\mathrm{SE}_m^2 + \mathrm{SE}_a^2}},

the two samples being independent. Under the hypothesis that the model samples the archive's
distribution, :math:`z` is approximately Student-t distributed with :math:`\nu` degrees of
freedom (the standard errors are estimated). With ``m`` tests in the verdict and a family-wise
false-fail rate :math:`\alpha`, each test fails when :math:`|z| > t_{\nu}^{-1}(1 - \alpha/2m)`
(Bonferroni): a right model fails the whole verdict with probability at most :math:`\alpha`,
whatever the ensemble and archive sizes, which only change the power.

Statistics that are smooth functions of means over independent units (a unit: one blanket of
one member, or one archive window) get their standard errors from a stratified bootstrap over
units (:func:`bootstrap_se`): units are resampled with replacement within each start date, the
statistic is recomputed from the resampled means, and the standard deviation over resamples is
the standard error. With few units per stratum the plain bootstrap is too narrow, for two
reasons: the bootstrap variance of a stratum's mean of :math:`n` units is
:math:`\frac{n-1}{n}\frac{s^2}{n}`, not :math:`\frac{s^2}{n}`; and units whose anomalies were
made by fitting :math:`p` coefficients to the stratum (:math:`p = 1`: deviations from the
ensemble mean) are not independent: for features quadratic in Gaussian anomalies (squares, lag
products) two units covary by :math:`V/(n-1)^2` (:math:`V` a unit's variance), so the variance
of their mean is :math:`V/(n-1)` while :math:`s^2/n` estimates :math:`V(n-2)/(n-1)^2`.
``fitted=p`` stretches each unit's deviation from its stratum's mean by
:math:`\sqrt{n/(n-1-p)}` before resampling, which restores both, exactly for the mean of
quadratic features of Gaussian anomalies with :math:`p = 1` (4 members: the standard error
grows by :math:`\sqrt 2`), to first order otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import NormalDist

import numpy as np

__all__ = ["bootstrap_se", "student_quantile", "z_threshold"]


def student_quantile(p: float, df: float) -> float:
    r"""Quantile :math:`t_\nu^{-1}(p)` of Student's t, by the Cornish-Fisher expansion around the
    normal quantile :math:`z` (accurate to 1e-3 for :math:`\nu \ge 5` in the tails used here):

    .. math::
        t \approx z + \frac{z^3 + z}{4\nu} + \frac{5z^5 + 16z^3 + 3z}{96\nu^2}
        + \frac{3z^7 + 19z^5 + 17z^3 - 15z}{384\nu^3}.
    """
    z = NormalDist().inv_cdf(p)
    if not np.isfinite(df) or df <= 0:
        return z
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def z_threshold(false_fail_rate: float, tests: int, df: float = np.inf) -> float:
    r"""The two-sided Bonferroni threshold :math:`t_\nu^{-1}(1 - \alpha / 2m)` for ``tests``
    (:math:`m`) tests at a family-wise rate ``false_fail_rate`` (:math:`\alpha`)."""
    return student_quantile(1 - false_fail_rate / (2 * max(int(tests), 1)), df)


def stratified_means(features: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """The mean over strata of the mean over the units of each stratum: ``(n, *F)`` -> ``(*F)``.

    Every start date weighs the same, whatever its number of units."""
    labels = np.unique(strata)
    return np.mean([features[strata == s].mean(axis=0) for s in labels], axis=0)


def bootstrap_se(
    features: np.ndarray,
    strata: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    resamples: int = 400,
    seed: int = 0,
    *,
    fitted: int | None = None,
) -> np.ndarray:
    r"""Standard error of ``statistic(stratified_means(features, strata))`` by a stratified
    bootstrap over units.

    Arguments:
        features: per-unit values ``(n, *F)`` (sums whose means the statistic needs).
        strata: ``(n,)`` the stratum (start date) of each unit; units are resampled with
            replacement within their stratum.
        statistic: maps means ``(B, *F)`` to statistics ``(B, *G)`` (vectorised over the first
            axis).
        resamples: bootstrap resamples ``B``.
        seed: the resampling generator's seed (the check is deterministic).
        fitted: the coefficients fitted per stratum to make the anomalies the features are
            built from (1: the ensemble mean); deviations are stretched by
            :math:`\sqrt{n/(n-1-p)}` (module docstring). None: the plain bootstrap.

    Returns:
        ``(*G)``: the standard deviation (ddof 1) of the statistic over the resamples.
    """
    rng = np.random.default_rng(seed)
    features = np.asarray(features, dtype=np.float64)
    labels = np.unique(strata)
    means = np.zeros((resamples, *features.shape[1:]))
    for s in labels:
        block = features[strata == s]
        n = len(block)
        if fitted is not None and n > 1 + fitted:
            centre = block.mean(axis=0)
            block = centre + (block - centre) * np.sqrt(n / (n - 1 - fitted))
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)  # (B, n)
        means += np.tensordot(counts / n, block, axes=(1, 0))
    means /= len(labels)
    return np.std(statistic(means), axis=0, ddof=1)
