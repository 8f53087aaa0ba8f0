r"""Ensemble and prior metrics: pure numpy functions on small arrays, no I/O.

Shapes: an ensemble is ``(M, ...)`` (members first), an observation ``(...)``; trajectories put
time on a named axis. Everything is computed in float64.

Ensemble scores (for members :math:`x_1..x_M` and the truth :math:`y`):

- skill: ensemble-mean RMSE :math:`\sqrt{\overline{(\bar x - y)^2}}`;
- spread: :math:`\sqrt{\overline{s^2}}` with the unbiased member variance
  :math:`s^2 = \frac{1}{M-1}\sum_i (x_i - \bar x)^2`;
- spread-skill ratio with the finite-ensemble factor (Fortin et al. 2014):
  :math:`\mathrm{SSR} = \sqrt{(M+1)/M}\ \mathrm{spread} / \mathrm{RMSE}`, 1 for a perfectly
  dispersed ensemble whatever :math:`M`;
- CRPS of the empirical distribution,
  :math:`\frac1M\sum_i |x_i - y| - \frac{1}{2M^2}\sum_{i,j}|x_i - x_j|`, and the fair CRPS
  (Ferro 2014) with :math:`\frac{1}{2M(M-1)}` in the second term (unbiased for the CRPS of the
  distribution the members are drawn from; for :math:`M = 1` both are the absolute error).

Prior metrics (what a prior must reproduce of the archive):

- autocorrelation at lag :math:`L` pooled over pairs of states :math:`(p, p+L)`:
  :math:`\sum a_p a_{p+L} / \sqrt{\sum a_p^2 \sum a_{p+L}^2}` of anomalies :math:`a`, split into
  pairs inside one blanket's output and pairs that cross a blanket seam
  (:func:`seam_boundaries`, :func:`crossing_mask`);
- seam discontinuity index: mean squared one-step increment across seams divided by the one
  inside blankets (1 without seams, larger with jumps);
- zonal power spectrum (one-sided, Parseval-normalised: it sums to the mean square);
- diurnal harmonic: least-squares fit :math:`c_0 + a\cos\omega h + b\sin\omega h` on the hour of
  day :math:`h`, :math:`\omega = 2\pi/24`; amplitude :math:`|a + ib|`, phase (hour of the maximum)
  :math:`\arg(a + ib)/\omega`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "OMEGA",
    "crossing_mask",
    "crps_ensemble",
    "diurnal_design",
    "diurnal_fit",
    "diurnal_summary",
    "ensemble_anomalies",
    "increment_sums",
    "lag_correlation",
    "lag_sums",
    "seam_boundaries",
    "seam_index",
    "spectrum_shape_error",
    "spread_skill_ratio",
    "zonal_spectrum",
]

OMEGA = 2 * math.pi / 24.0  # radians per hour: the diurnal frequency


# --------------------------------------------------------------------------------------------
# ensemble scores


def crps_ensemble(ensemble: np.ndarray, truth: np.ndarray, fair: bool = False) -> np.ndarray:
    r"""CRPS of an ensemble ``(M, ...)`` against ``truth`` ``(...)``: ``(...)`` float64.

    Uses the sorted-member identity
    :math:`\sum_{i,j}|x_i - x_j| = 2\sum_i (2i - M - 1)\,x_{(i)}` (``i = 1..M``), so it costs
    :math:`O(M \log M)` per point. ``fair=True`` gives the fair CRPS (see the module docstring);
    with one member both are :math:`|x - y|`.
    """
    x = np.asarray(ensemble, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    M = x.shape[0]
    skill = np.abs(x - y[None]).mean(axis=0)
    if M == 1:
        return skill
    weights = (2 * np.arange(1, M + 1) - M - 1).astype(np.float64)
    pair_sum = 2 * np.tensordot(weights, np.sort(x, axis=0), axes=(0, 0))  # sum_{i,j}|xi - xj|
    denominator = 2 * M * (M - 1) if fair else 2 * M * M
    return skill - pair_sum / denominator


def spread_skill_ratio(
    spread: np.ndarray | float, rmse: np.ndarray | float, members: int
) -> np.ndarray | float:
    r""":math:`\sqrt{(M+1)/M}\ \mathrm{spread}/\mathrm{RMSE}` (NaN where the RMSE is 0)."""
    spread = np.asarray(spread, dtype=np.float64)
    rmse = np.asarray(rmse, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = math.sqrt((members + 1) / members) * spread / rmse
    value = np.where(rmse > 0, value, np.nan)
    return float(value) if value.ndim == 0 else value


# --------------------------------------------------------------------------------------------
# anomalies, blankets and seams


def ensemble_anomalies(ensemble: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    r"""Anomalies of an ensemble ``(M, ...)`` for correlations and spectra: float64 ``(M, ...)``.

    With :math:`M \ge 2`: deviations from the ensemble mean scaled by :math:`\sqrt{M/(M-1)}`, so
    their variance is the members' and their lag covariances are the members' whatever their
    mean (a biased model does not look more correlated). With one member: ``ensemble -
    reference`` (e.g. the climatological mean), or the raw values when ``reference`` is None.
    """
    x = np.asarray(ensemble, dtype=np.float64)
    M = x.shape[0]
    if M >= 2:
        return (x - x.mean(axis=0, keepdims=True)) * math.sqrt(M / (M - 1))
    return x - (0.0 if reference is None else np.asarray(reference, dtype=np.float64))


def seam_boundaries(
    trajectory_size: int, blanket_size: int, overlap: int, fold: str = "symmetrical"
) -> np.ndarray:
    r"""States ``p`` (``0 < p < T0``) where state ``p - 1`` and ``p`` come from different blankets.

    ``symmetrical``: blanket ``n >= 1`` starts owning at :math:`nS + \lfloor O/2 \rfloor`;
    ``causal``: at :math:`nS + O`; ``average``: every state where a blanket starts or ends
    (:math:`nS` and :math:`nS + K`), since the mixture changes there. With one blanket there
    are none. Returns int64 ``(n_seams,)``, sorted.
    """
    from priorflow.core.blanket import BlanketPlan

    plan = BlanketPlan(trajectory_size, blanket_size, overlap)
    N, S, K, O = plan.num_blankets, plan.stride, blanket_size, overlap
    if N == 1:
        seams: list[int] = []
    elif fold == "symmetrical":
        seams = [n * S + O // 2 for n in range(1, N)]
    elif fold == "causal":
        seams = [n * S + O for n in range(1, N)]
    elif fold == "average":
        seams = sorted({n * S for n in range(1, N)} | {n * S + K for n in range(N - 1)})
    else:
        from priorflow.core.blanket import check_fold

        check_fold(fold)
        seams = []
    return np.array([p for p in seams if 0 < p < trajectory_size], dtype=np.int64)


def crossing_mask(length: int, lags: Sequence[int], seams: Sequence[int]) -> np.ndarray:
    """``(len(lags), length)`` bool: pair ``(p, p + L)`` crosses a seam ``q`` (``p < q <= p + L``).

    Entries with ``p + L >= length`` (no pair) are False.
    """
    seams = np.asarray(seams, dtype=np.int64)
    p = np.arange(length)
    out = np.zeros((len(lags), length), dtype=bool)
    for i, lag in enumerate(lags):
        crosses = ((seams[None, :] > p[:, None]) & (seams[None, :] <= p[:, None] + lag)).any(1)
        out[i] = crosses & (p + lag < length)
    return out


# --------------------------------------------------------------------------------------------
# autocorrelation and seams


def lag_sums(anomalies: np.ndarray, lags: Sequence[int], time_axis: int = 1) -> np.ndarray:
    r"""Per pair start ``p`` and lag: :math:`\sum a_p a_{p+L}`, :math:`\sum a_p^2`, :math:`\sum a_{p+L}^2`.

    ``anomalies`` is ``(N, T, C, *rest)`` with time on ``time_axis`` (default 1) and channels
    right after it; sums run over every axis but time and channel. Returns float64
    ``(3, len(lags), T, C)``, zero where ``p + L >= T``.
    """
    a = np.moveaxis(np.asarray(anomalies, dtype=np.float64), time_axis, 1)
    T, C = a.shape[1], a.shape[2]
    reduce = (0, *range(3, a.ndim))
    out = np.zeros((3, len(lags), T, C))
    for i, lag in enumerate(lags):
        if lag >= T:
            continue
        head, tail = a[:, : T - lag], a[:, lag:]
        out[0, i, : T - lag] = (head * tail).sum(axis=reduce)
        out[1, i, : T - lag] = (head * head).sum(axis=reduce)
        out[2, i, : T - lag] = (tail * tail).sum(axis=reduce)
    return out


def lag_correlation(sums: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Correlations from :func:`lag_sums` ``(3, L, T, C)`` pooled over the pair starts in ``mask``
    ``(L, T)`` (all when None): ``(L, C)``, NaN where no pair is selected."""
    if mask is None:
        mask = np.ones(sums.shape[1:3], dtype=bool)
    pooled = (sums * mask[None, :, :, None]).sum(axis=2)  # (3, L, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = pooled[0] / np.sqrt(pooled[1] * pooled[2])
    return np.where(pooled[1] * pooled[2] > 0, corr, np.nan)


def increment_sums(anomalies: np.ndarray, time_axis: int = 1) -> np.ndarray:
    r""":math:`\sum (a_p - a_{p-1})^2` per state ``p`` and channel: float64 ``(T, C)``, row 0 zero.

    Same layout as :func:`lag_sums`.
    """
    a = np.moveaxis(np.asarray(anomalies, dtype=np.float64), time_axis, 1)
    reduce = (0, *range(3, a.ndim))
    out = np.zeros(a.shape[1:3])
    out[1:] = (np.diff(a, axis=1) ** 2).sum(axis=reduce)
    return out


def seam_index(increments: np.ndarray, seams: Sequence[int]) -> np.ndarray:
    """Mean squared one-step increment across seams over the one inside blankets, per channel.

    ``increments`` is :func:`increment_sums` ``(T, C)`` (summed over equally many values per
    state). Returns ``(C,)``; NaN without seams (one blanket) or without inside steps.
    """
    T = increments.shape[0]
    across = np.zeros(T, dtype=bool)
    across[np.asarray(seams, dtype=np.int64)] = True
    inside = ~across
    inside[0] = False
    if not across.any() or not inside.any():
        return np.full(increments.shape[1], np.nan)
    return increments[across].mean(axis=0) / increments[inside].mean(axis=0)


# --------------------------------------------------------------------------------------------
# spectra


def zonal_spectrum(field: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""One-sided power spectrum along ``axis`` (periodic), Parseval-normalised.

    For ``n`` points, with :math:`F_k` the DFT: :math:`P_0 = |F_0|^2/n^2`,
    :math:`P_k = 2|F_k|^2/n^2` for :math:`0 < k < n/2`, and :math:`P_{n/2} = |F_{n/2}|^2/n^2` for
    even ``n``; so :math:`\sum_k P_k` is the mean square along the axis and a sine of amplitude
    :math:`A` at wavenumber :math:`k` gives :math:`P_k = A^2/2`. Returns ``(..., n // 2 + 1)`` with
    the wavenumber last.
    """
    x = np.moveaxis(np.asarray(field, dtype=np.float64), axis, -1)
    n = x.shape[-1]
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2 / n**2
    power[..., 1 : (n + 1) // 2] *= 2
    return power


# --------------------------------------------------------------------------------------------
# the diurnal cycle


def diurnal_design(hours: np.ndarray) -> np.ndarray:
    r"""Design matrix ``(n, 3)``: :math:`[1, \cos\omega h, \sin\omega h]` for hours of day ``(n,)``."""
    h = np.asarray(hours, dtype=np.float64).reshape(-1)
    return np.stack([np.ones_like(h), np.cos(OMEGA * h), np.sin(OMEGA * h)], axis=1)


def diurnal_fit(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    r"""Solve the accumulated normal equations :math:`(X^\top X)\beta = X^\top y`.

    ``normal`` is ``(3, 3)``, ``rhs`` ``(3, ...)``. Returns the complex harmonic
    :math:`a + ib` ``(...)``; NaN when fewer than 3 distinct hours were seen (singular system).
    """
    rhs = np.asarray(rhs, dtype=np.float64)
    if np.linalg.cond(normal) > 1e8:
        return np.full(rhs.shape[1:], np.nan + 0j)
    beta = np.linalg.solve(normal, rhs.reshape(3, -1)).reshape(rhs.shape)
    return beta[1] + 1j * beta[2]


def diurnal_summary(
    harmonic: np.ndarray, reference: np.ndarray, noise: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    r"""Per channel: amplitude, reference amplitude, amplitude ratio and phase error (hours).

    ``harmonic`` and ``reference`` are complex ``(C, P)`` (points flattened). The amplitude is
    the RMS of :math:`|a + ib|` over points, less the estimation noise: ``noise`` ``(C,)`` is
    the mean of :math:`|\hat z - z|^2` of an estimate from as much data (e.g. the archive's own
    members against the climatological mean), subtracted from the mean square before the root,
    since noise inflates the amplitude of a fitted harmonic. The phase error is
    :math:`\arg \sum_p z_p \bar z^{ref}_p / \omega` in hours, in ``(-12, 12]`` (positive: the
    cycle peaks later than the reference's).
    """
    power = np.mean(np.abs(harmonic) ** 2, axis=1)
    if noise is not None:
        power = np.maximum(power - np.asarray(noise, dtype=np.float64), 0.0)
    amplitude = np.sqrt(power)
    ref_amplitude = np.sqrt(np.mean(np.abs(reference) ** 2, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = amplitude / ref_amplitude
    inner = np.sum(np.conj(harmonic) * reference, axis=1)  # arg = phase(ref) - phase(harmonic)
    phase = -np.angle(inner) / OMEGA
    return amplitude, ref_amplitude, ratio, phase


def spectrum_shape_error(spectrum: np.ndarray, reference: np.ndarray) -> np.ndarray:
    r"""RMS over wavenumbers :math:`k \ge 1` of :math:`\log_2` of the ratio of the two spectra,
    each normalised to unit total power (the shape, not the variance, which the standard
    deviation measures). ``(..., K)`` -> ``(...)``; wavenumbers where the reference holds less
    than 1e-6 of its total are left out.
    """
    p = np.asarray(spectrum, dtype=np.float64)[..., 1:]
    q = np.asarray(reference, dtype=np.float64)[..., 1:]
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    keep = q > 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(keep, np.log2(p / q), 0.0)
    return np.sqrt((logs**2).sum(axis=-1) / np.maximum(keep.sum(axis=-1), 1))
