r"""What composition does: the run's composed trajectories against the model's own blankets.

A run composes trajectories of :math:`T` states from blankets of :math:`K` states overlapping by
:math:`O` (DESIGN.md section 3); its seams :math:`Q` are the states :math:`p` whose predecessor
came from another blanket (:func:`~priorflow.evaluation.metrics.seam_boundaries`, from the run's
``blanket_size``, ``blanket_overlap`` and ``fold_mode``), and they cut the trajectory into
segments :math:`[q_i, q_{i+1})`, one per blanket's output. The model's own blankets (``K``
states sampled at once, the learned verdict's) show what the denoiser gives without
composition, so that a difference between the two is what composition does; the archive is the
reference where blankets cannot answer (lags :math:`L \ge K`).

Three samples per start date :math:`d`, each cut into units (one trajectory, blanket or archive
window) with anomalies (:mod:`priorflow.evaluation.blanket_stats`):

- composed: the run's ``M`` members :math:`x_j` ``(T, C, *sp)``,
  :math:`a_j = (x_j - \bar x)\sqrt{M/(M-1)}`;
- blankets: the model's :math:`M_b` blankets ``(K, C, *sp)``, centred the same way;
- archive: windows of ``T`` states at the same hours within ``check.blanket_window_days`` of
  the date, in every year, a day more than their span apart, residuals of the seasonal-drift fit
  :math:`\beta_0 + \beta_1\delta`.

Per unit and channel :math:`c` (means over the points of the state): squares
:math:`s_p = \overline{a_p^2}`, one-state increments :math:`e_p = \overline{(a_p - a_{p-1})^2}`
(:math:`p \ge 1`) and, for every lag :math:`L`, :math:`\overline{a_p a_{p+L}}`,
:math:`\overline{a_p^2}`, :math:`\overline{a_{p+L}^2}` pooled over :math:`p < T - L`. Each
statistic is a function of these means over the units of a date, then over dates (every date
weighs the same), per channel:

- seams: the seam index :math:`E_Q / E_I`, with :math:`E_Q` the mean of :math:`e_p` over the
  seams and :math:`E_I` over the other states :math:`p \ge 1`, against 1 (a stationary process
  has the same increments everywhere); and :math:`E_Q` against the blankets' mean :math:`e_p`
  over :math:`1 \le p < K` (a jump at a seam raises both);
- autocorrelation (lags :math:`L < K`): :math:`r_L = \overline{a_p a_{p+L}} /
  \sqrt{\overline{a_p^2}\,\overline{a_{p+L}^2}}` over the whole trajectory against the
  blankets' :math:`r_L` (what composition changes of what the denoiser gives) and against the
  archive windows' :math:`r_L`;
- autocorrelation_beyond (:math:`K \le L \le` ``max_lag``): :math:`r_L` against the archive
  windows' :math:`r_L`, the only reference beyond the blanket;
- variance: the mean of :math:`s_p` over the whole trajectory and over each segment, against
  the blankets' mean of :math:`s_p` over their :math:`K` states.

Standard errors come from the stratified bootstrap over units
(:func:`~priorflow.evaluation.significance.bootstrap_se`, ``fitted``: a run has few members per
date, centred on their own mean; 3 at least), of each sample apart, adding in quadrature (the
seam index has only the composed sample's);
:math:`z = (\text{composed} - \text{reference}) / \mathrm{SE}` with :math:`\nu` = units -
dates of the smaller sample. The verdict (:mod:`priorflow.evaluation.composition_check`)
judges every :math:`z` at :math:`\tau_c\, t_\nu^{-1}(1 - \alpha/2m)`, :math:`m` the composition
tests of the run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from priorflow.evaluation.significance import bootstrap_se, stratified_means

__all__ = [
    "AGAINST",
    "CompositionTest",
    "Units",
    "composition_tests",
    "segments",
    "trajectory_features",
]

#: What a composed statistic is compared with, as a message says it.
AGAINST = {
    "stationary": "1 without seams",
    "blankets": "the blankets'",
    "archive": "the archive's",
}

Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CompositionTest:
    """One composed statistic against its reference (``against``: a key of :data:`AGAINST`),
    the standard error of their difference, ``z`` and the degrees of freedom of that SE."""

    criterion: str
    label: str
    against: str
    composed: float
    reference: float
    se: float
    z: float
    df: float


def trajectory_features(a: np.ndarray, lags: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-unit means over the points of anomalies ``(n, T, C, *sp)``: ``square`` ``(n, T, C)``,
    ``increment`` ``(n, T, C)`` (row 0 zero) and ``lag`` ``(n, 3, len(lags), C)`` (products,
    left and right squares pooled over the pairs of each lag)."""
    n, T, C = a.shape[:3]
    flat = np.asarray(a, dtype=np.float64).reshape(n, T, C, -1)
    square = (flat**2).mean(axis=3)
    increment = np.zeros_like(square)
    increment[:, 1:] = (np.diff(flat, axis=1) ** 2).mean(axis=3)
    lag = np.zeros((n, 3, len(lags), C))
    for i, L in enumerate(lags):
        left, right = flat[:, : T - L], flat[:, L:]
        lag[:, 0, i] = (left * right).mean(axis=(1, 3))
        lag[:, 1, i] = (left**2).mean(axis=(1, 3))
        lag[:, 2, i] = (right**2).mean(axis=(1, 3))
    return {"square": square, "increment": increment, "lag": lag}


@dataclass
class Units:
    """One sample's per-unit features (:func:`trajectory_features`), every date's units stacked,
    with the date (stratum) of each unit and the coefficients fitted per date to make the
    anomalies (1: the members' mean; 2: the archive's seasonal-drift fit)."""

    features: dict[str, np.ndarray]
    strata: np.ndarray
    fitted: int = 1

    @classmethod
    def stack(cls, per_date: Sequence[dict[str, np.ndarray]], fitted: int = 1) -> Units:
        """The features of each date's units, in date order."""
        keys = per_date[0].keys()
        strata = np.concatenate([np.full(len(f["square"]), d) for d, f in enumerate(per_date)])
        return cls({k: np.concatenate([f[k] for f in per_date]) for k in keys}, strata, fitted)

    @property
    def units(self) -> int:
        return len(self.strata)

    @property
    def dates(self) -> int:
        return len(np.unique(self.strata))

    def value(self, key: str, statistic: Statistic) -> np.ndarray:
        """The statistic of the stratified means."""
        return statistic(stratified_means(self.features[key], self.strata)[None])[0]

    def se(self, key: str, statistic: Statistic, resamples: int, seed: int) -> np.ndarray:
        """Its standard error (stratified bootstrap, stretched for the fitted coefficients)."""
        return bootstrap_se(
            self.features[key], self.strata, statistic, resamples, seed, fitted=self.fitted
        )


def segments(length: int, seams: Sequence[int]) -> list[tuple[int, int]]:
    """The states each blanket gives: ``[0, q_1), [q_1, q_2), ..., [q_n, length)``."""
    edges = [0, *(int(q) for q in seams), int(length)]
    return [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]


def _acf(m: np.ndarray) -> np.ndarray:
    return m[:, 0] / np.sqrt(m[:, 1] * m[:, 2])


class _Tests:
    """Collects the tests: composed against a reference sample (or a constant)."""

    def __init__(self, composed: Units, resamples: int, seed: int):
        self.composed, self.resamples, self.seed = composed, resamples, seed
        self.tests: list[CompositionTest] = []

    def _se(self, units: Units, key: str, statistic: Statistic) -> np.ndarray:
        self.seed += 1  # every bootstrap its own resamples
        return units.se(key, statistic, self.resamples, self.seed)

    def add(
        self,
        criterion: str,
        labels: list[str],
        against: str,
        key: str,
        statistic: Statistic,
        reference: Units | None = None,
        reference_statistic: Statistic | None = None,
    ) -> None:
        """Tests of ``statistic`` of the composed ``key`` means against the same (or
        ``reference_statistic``) of ``reference``, or against 1 when there is none."""
        c = self.composed
        value = c.value(key, statistic)
        variance = self._se(c, key, statistic) ** 2
        df = c.units - c.dates
        if reference is None:
            expected = np.ones_like(value)
        else:
            statistic_r = reference_statistic or statistic
            expected = reference.value(key, statistic_r)
            variance = variance + self._se(reference, key, statistic_r) ** 2
            df = min(c.units, reference.units) - max(c.dates, reference.dates)
        se = np.sqrt(variance)
        values = zip(labels, value.ravel(), expected.ravel(), se.ravel(), strict=True)
        for label, v, r, s in values:
            if np.isfinite(v) and np.isfinite(r) and s > 0:
                z = float((v - r) / s)
                v, r, s = float(v), float(r), float(s)
                test = CompositionTest(criterion, label, against, v, r, s, z, float(df))
                self.tests.append(test)


def composition_tests(
    composed: Units,
    blankets: Units,
    archive: Units | None,
    *,
    seams: Sequence[int],
    blanket_size: int,
    lags: Sequence[int],
    channels: Sequence[str] | None = None,
    resamples: int = 400,
    seed: int = 0,
) -> list[CompositionTest]:
    """Every test of the module docstring (seams, autocorrelation within and beyond the
    blanket, variance), per channel.

    Arguments:
        composed: the run's trajectories' features (``T`` states, ``lags``).
        blankets: the model's blankets' features (``K`` states, lags ``1..K-1``).
        archive: the archive windows' features (``T`` states, ``lags``); None: no test
            against the archive.
        seams: the seam states of the composition
            (:func:`~priorflow.evaluation.metrics.seam_boundaries`); none: no test.
        blanket_size: ``K``.
        lags: the lags of ``composed`` and ``archive``.
        channels: channel labels (default ``0..C-1``).
        resamples, seed: of the bootstraps.
    """
    T, C = composed.features["square"].shape[1:]
    K = int(blanket_size)
    seams = np.asarray(seams, dtype=np.int64)
    if seams.size == 0:
        return []
    channels = list(channels) if channels is not None else [str(c) for c in range(C)]
    out = _Tests(composed, resamples, seed)

    inside = np.setdiff1d(np.arange(1, T), seams)
    if inside.size:
        out.add(
            "seams",
            [f"channel {c} increment across seams / inside blankets" for c in channels],
            "stationary",
            "increment",
            lambda m: m[:, seams].mean(axis=1) / m[:, inside].mean(axis=1),
        )
    out.add(
        "seams",
        [f"channel {c} mean squared increment across seams" for c in channels],
        "blankets",
        "increment",
        lambda m: m[:, seams].mean(axis=1),
        blankets,
        reference_statistic=lambda m: m[:, 1:].mean(axis=1),
    )

    within = [i for i, L in enumerate(lags) if L < K]
    if within:
        blanket_rows = [int(lags[i]) - 1 for i in within]
        out.add(
            "autocorrelation",
            [f"channel {c} lag {lags[i]}" for i in within for c in channels],
            "blankets",
            "lag",
            lambda m: _acf(m)[:, within],
            blankets,
            reference_statistic=lambda m: _acf(m)[:, blanket_rows],
        )
    for criterion, chosen in (
        ("autocorrelation", [i for i, L in enumerate(lags) if L < K]),
        ("autocorrelation_beyond", [i for i, L in enumerate(lags) if L >= K]),
    ):
        if chosen and archive is not None:
            out.add(
                criterion,
                [
                    f"channel {c} lag {lags[i]}"
                    + (" (beyond the blanket)" if lags[i] >= K else "")
                    for i in chosen
                    for c in channels
                ],
                "archive",
                "lag",
                lambda m, chosen=chosen: _acf(m)[:, chosen],
                archive,
            )

    parts = [(0, T), *segments(T, seams)]  # the whole trajectory, then each blanket's states
    out.add(
        "variance",
        [
            f"channel {c} states {lo}-{hi - 1}" + (" (all)" if (lo, hi) == (0, T) else "")
            for lo, hi in parts
            for c in channels
        ],
        "blankets",
        "square",
        lambda m: np.stack([m[:, lo:hi].mean(axis=1) for lo, hi in parts], axis=1),
        blankets,
        reference_statistic=lambda m: np.repeat(m.mean(axis=1)[:, None], len(parts), axis=1),
    )
    return out.tests
