r"""The statistics of the "did the denoiser learn?" verdict, each with its standard error.

Inputs (:class:`~priorflow.evaluation.blanket_samples.BlanketSamples`): per start date
:math:`d`, model blankets :math:`x_j`, :math:`j < M`, and archive windows :math:`y_i` with day
shifts :math:`\delta_i`, :math:`i < N_d`; all ``(K, C, *sp)``.

Centring (per date, state, channel and point):

- model anomalies :math:`a_j = (x_j - \bar x)\sqrt{M/(M-1)}`;
- archive anomalies: the residuals of the least-squares fit
  :math:`y_i \approx \beta_0 + \beta_1\delta_i` (the seasonal drift of the mean across the
  window of days), scaled by :math:`\sqrt{N/(N-p)}` (:math:`p = 2` fitted coefficients);
  :math:`\beta_0` is the archive's mean at the model's own valid times. The curvature of the
  seasonal cycle left in :math:`\beta_0` is :math:`m''\,\overline{\delta^2}/2`, about 0.1
  standard error for the synthetic world with a 15-day window.

Both scalings make :math:`\frac1n\sum_j a_j^2` unbiased for the variance, and the covariance
across states, channels and points is kept, so the two samples' anomalies estimate the same
second moments. Each statistic below is computed per date and averaged over dates (every date
weighs the same); a unit is one blanket or one window.

=============== ============================================================================
statistic       definition (means over the units of a date, then over dates)
=============== ============================================================================
mean            per date, channel and latitude band (the first spatial axis cut in up to 4):
                model :math:`\bar u` of the unit averages :math:`u_j` over states and band;
                archive :math:`\beta_0` of the same fit on the windows' averages. SE
                :math:`\sqrt{s_u^2/M + s_r^2 [(G^\top G)^{-1}]_{00}(1 + 2 r_1)}` with
                :math:`s_r^2` the residual variance, :math:`G` the design and :math:`r_1` the
                correlation of residuals of windows one day apart (archive days are not
                independent)
std             :math:`\sqrt{\overline{a^2}}` per channel
autocorrelation :math:`\overline{a_k a_{k+L}} / \sqrt{\overline{a_k^2}\,\overline{a_{k+L}^2}}`
                over :math:`k < K - L`, per channel, every lag :math:`L = 1..K-1`
spectrum        fraction of the zonal power (last axis) in the bands of wavenumbers
                :math:`\{0\}, \{1\}, [2, 4), [4, 8), ...`, per channel (the shape; the level is
                the std's)
cross_channel   correlation :math:`\overline{a_c a_{c'}}/\sqrt{\overline{a_c^2}\,\overline{a_{c'}^2}}`
                per pair of channels
=============== ============================================================================

The standard errors of every statistic but the mean come from the stratified bootstrap over
units (:func:`~priorflow.evaluation.significance.bootstrap_se`), for each sample, and add in
quadrature. The bootstrap's deviations are stretched by :math:`\sqrt{n/(n-1-p)}` for the
:math:`p` coefficients fitted per date (:math:`p = 1`: the members' mean; :math:`p = 2`: the
archive's drift fit): centred units are not independent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from priorflow.evaluation.blanket_samples import BlanketSamples
from priorflow.evaluation.significance import bootstrap_se, stratified_means

__all__ = [
    "BlanketTest",
    "blanket_tests",
    "centre",
    "member_anomalies",
    "unit_features",
    "window_anomalies",
]


@dataclass(frozen=True)
class BlanketTest:
    """One compared statistic: ``(criterion, label)``, the model's and the archive's values,
    the standard error of their difference, ``z`` and the degrees of freedom of that SE."""

    criterion: str
    label: str
    model: float
    archive: float
    se: float
    z: float
    df: float


def _design(shifts: np.ndarray) -> np.ndarray:
    """``[1, delta]`` (``[1]`` when every shift is the same)."""
    columns = [np.ones_like(shifts), shifts]
    p = min(2, len(np.unique(shifts)))
    return np.stack(columns[:p], axis=1)


def member_anomalies(x: np.ndarray) -> np.ndarray:
    r"""Deviations of members ``(M, ...)`` from their mean, scaled by :math:`\sqrt{M/(M-1)}`."""
    M = len(x)
    return (x - x.mean(axis=0)) * np.sqrt(M / (M - 1))


def window_anomalies(y: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    r"""Residuals of the fit :math:`y_i \approx \beta_0 + \beta_1\delta_i` of windows ``(N, ...)``
    over their day shifts ``(N,)``, scaled by :math:`\sqrt{N/(N-p)}`."""
    G = _design(shifts)
    N, p = G.shape
    flat = y.reshape(N, -1)
    beta, *_ = np.linalg.lstsq(G, flat, rcond=None)
    return ((flat - G @ beta) * np.sqrt(N / (N - p))).reshape(y.shape)


def centre(samples: BlanketSamples) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Model and archive anomalies per date: ``(M, K, C, *sp)`` and ``(N_d, K, C, *sp)``."""
    model = [member_anomalies(x) for x in samples.model]
    archive = [
        window_anomalies(y, shifts)
        for y, shifts in zip(samples.archive, samples.shifts, strict=True)
    ]
    return model, archive


def _bands(n: int) -> list[tuple[int, int]]:
    """Wavenumber bands ``{0}, {1}, [2, 4), [4, 8), ...`` up to ``n`` (exclusive)."""
    bands, lo = [(0, 1)], 1
    while lo < n:
        bands.append((lo, min(2 * lo, n)))
        lo *= 2
    return bands


def unit_features(a: np.ndarray) -> dict[str, np.ndarray]:
    """Per-unit sums of anomalies ``(n, K, C, *sp)``: ``var`` ``(n, C)``; ``lag`` ``(n, 3,
    K-1, C)`` (products, left and right squares); ``cross`` ``(n, C, C)``; ``spectrum``
    ``(n, C, bands)`` when there is a spatial axis."""
    n, K, C = a.shape[:3]
    flat = a.reshape(n, K, C, -1)
    out = {"var": (flat**2).mean(axis=(1, 3))}
    lag = np.zeros((n, 3, K - 1, C))
    for L in range(1, K):
        left, right = flat[:, : K - L], flat[:, L:]
        lag[:, 0, L - 1] = (left * right).mean(axis=(1, 3))
        lag[:, 1, L - 1] = (left**2).mean(axis=(1, 3))
        lag[:, 2, L - 1] = (right**2).mean(axis=(1, 3))
    out["lag"] = lag
    out["cross"] = np.einsum("nkcp,nkdp->ncd", flat, flat) / (K * flat.shape[-1])
    if a.ndim > 3:
        width = a.shape[-1]
        power = np.abs(np.fft.rfft(a, axis=-1)) ** 2 / width**2
        power[..., 1 : (width + 1) // 2] *= 2
        power = power.mean(axis=(1, *range(3, a.ndim - 1)))  # (n, C, nw)
        out["spectrum"] = np.stack(
            [power[..., lo:hi].sum(axis=-1) for lo, hi in _bands(power.shape[-1])], axis=-1
        )
    return out


def _std(m: np.ndarray) -> np.ndarray:
    return np.sqrt(m)


def _acf(m: np.ndarray) -> np.ndarray:
    return m[:, 0] / np.sqrt(m[:, 1] * m[:, 2])


def _fractions(m: np.ndarray) -> np.ndarray:
    return m / m.sum(axis=-1, keepdims=True)


def _pairs(C: int) -> list[tuple[int, int]]:
    return [(c, d) for c in range(C) for d in range(c + 1, C)]


def _correlations(m: np.ndarray) -> np.ndarray:
    C = m.shape[-1]
    return np.stack([m[:, c, d] / np.sqrt(m[:, c, c] * m[:, d, d]) for c, d in _pairs(C)], -1)


_STATISTICS = {
    "std": ("var", _std),
    "autocorrelation": ("lag", _acf),
    "spectrum": ("spectrum", _fractions),
    "cross_channel": ("cross", _correlations),
}


def _labels(criterion: str, shape: tuple[int, ...], channels: list[str], width: int) -> list[str]:
    if criterion == "std":
        return [f"channel {c}" for c in channels]
    if criterion == "autocorrelation":
        return [f"channel {c} lag {L + 1}" for L in range(shape[0]) for c in channels]
    if criterion == "spectrum":
        bands = [
            str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}" for lo, hi in _bands(width // 2 + 1)
        ]
        return [f"channel {c} zonal wavenumbers {band}" for c in channels for band in bands]
    C = len(channels)
    return [f"channels {channels[c]}-{channels[d]}" for c, d in _pairs(C)]


def _moment_tests(
    model: list[np.ndarray],
    archive: list[np.ndarray],
    channels: list[str],
    resamples: int,
    seed: int,
) -> list[BlanketTest]:
    fm = [unit_features(a) for a in model]
    fa = [unit_features(a) for a in archive]
    sm = np.concatenate([np.full(len(a), d) for d, a in enumerate(model)])
    sa = np.concatenate([np.full(len(a), d) for d, a in enumerate(archive)])
    tests = []
    for criterion, (key, statistic) in _STATISTICS.items():
        if key not in fm[0]:
            continue
        xm = np.concatenate([f[key] for f in fm])
        xa = np.concatenate([f[key] for f in fa])
        value_m = statistic(stratified_means(xm, sm)[None])[0]
        value_a = statistic(stratified_means(xa, sa)[None])[0]
        se = np.sqrt(
            bootstrap_se(xm, sm, statistic, resamples, seed, fitted=1) ** 2
            + bootstrap_se(xa, sa, statistic, resamples, seed + 1, fitted=2) ** 2
        )
        df = min(len(xm), len(xa)) - len(model)
        labels = _labels(criterion, value_m.shape, channels, model[0].shape[-1])
        for label, vm, va, s in zip(
            labels, value_m.ravel(), value_a.ravel(), se.ravel(), strict=True
        ):
            tests.append(BlanketTest(criterion, label, vm, va, s, (vm - va) / s, df))
    return tests


def _latitude_bands(n: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, min(4, n) + 1).round().astype(int)
    return list(itertools.pairwise(int(e) for e in edges))


def _band_means(x: np.ndarray) -> np.ndarray:
    """``(n, K, C, *sp)`` -> ``(n, C, bands)``: averages over states and each latitude band."""
    if x.ndim == 3:
        return x.mean(axis=1)[..., None]
    rows = _latitude_bands(x.shape[3])
    return np.stack(
        [x[:, :, :, lo:hi].mean(axis=(1, *range(3, x.ndim))) for lo, hi in rows], axis=-1
    )


def _neighbour_correlation(residuals: list[np.ndarray], shifts: list[np.ndarray]) -> float:
    """Correlation of residuals of windows one day apart (same year), pooled, in ``[0, 0.5]``."""
    num = den = 0.0
    for r, days in zip(residuals, shifts, strict=True):
        order = np.arange(len(days))
        adjacent = order[1:][np.diff(days) == 1]  # windows are listed by year, then day
        num += float((r[adjacent] * r[adjacent - 1]).sum())
        den += float((r**2).sum()) * len(adjacent) / max(len(days), 1)
    return float(np.clip(num / den, 0.0, 0.5)) if den > 0 else 0.0


def _mean_tests(samples: BlanketSamples, channels: list[str]) -> list[BlanketTest]:
    fits = []
    for x, y, shifts in zip(samples.model, samples.archive, samples.shifts, strict=True):
        u, v = _band_means(x), _band_means(y)  # (M, C, B), (N, C, B)
        G = _design(shifts)
        N, p = G.shape
        beta, *_ = np.linalg.lstsq(G, v.reshape(N, -1), rcond=None)
        residual = v.reshape(N, -1) - G @ beta
        s2 = (residual**2).sum(axis=0) / (N - p)
        leverage = np.linalg.inv(G.T @ G)[0, 0]
        intercept, s2 = beta[0].reshape(v.shape[1:]), s2.reshape(v.shape[1:])
        fits.append((u, intercept, s2, leverage, N - p, residual))
    r1 = _neighbour_correlation([fit[5] for fit in fits], samples.shifts)
    tests = []
    for start, (u, intercept, s2, leverage, dof, _) in zip(samples.starts, fits, strict=True):
        M = len(u)
        var_m = u.var(axis=0, ddof=1) / M
        var_a = s2 * leverage * (1 + 2 * r1)
        se = np.sqrt(var_m + var_a)
        mean_m = u.mean(axis=0)
        for c, channel in enumerate(channels):
            for b in range(u.shape[-1]):
                tests.append(
                    BlanketTest(
                        "mean",
                        f"{start:%Y-%m-%d %Hh} channel {channel} latitude band {b + 1}"
                        f"/{u.shape[-1]}",
                        float(mean_m[c, b]),
                        float(intercept[c, b]),
                        float(se[c, b]),
                        float((mean_m[c, b] - intercept[c, b]) / se[c, b]),
                        float(min(M - 1, dof)),
                    )
                )
    return tests


def blanket_tests(
    samples: BlanketSamples,
    channels: list[str] | None = None,
    *,
    resamples: int = 400,
    seed: int = 0,
) -> list[BlanketTest]:
    """Every statistic of the module docstring, model against archive, with its SE and z."""
    C = samples.model.shape[3]
    channels = channels or [str(c) for c in range(C)]
    model, archive = centre(samples)
    return _mean_tests(samples, channels) + _moment_tests(
        model, archive, channels, resamples, seed
    )
