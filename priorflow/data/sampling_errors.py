r"""Exact standard errors of statistics estimated from samples of a synthetic world.

How far a per-channel mean, standard deviation or lag-1 correlation estimated from a finite
ensemble may lie from the world's exact value: the tolerance that tests of samplers, models and
the prior check need, derived rather than guessed.
"""

from __future__ import annotations

import numpy as np

from priorflow.data.synthetic import SyntheticWorld


def sampling_errors(
    world: SyntheticWorld, length: int, members: int = 1, dt_hours: float = 1
) -> dict[str, np.ndarray]:
    r"""Exact standard errors of per-channel statistics estimated from ``members`` independent
    trajectories of ``length`` states, ``dt_hours`` apart, pooled over members, time and space.

    With the anomalies :math:`a = x - m` (exact mean removed), per channel ``c``:

    - ``mean``: of the pooled mean of :math:`a` (:math:`s_c^2 \tau_1 P_0 / HW`, with
      :math:`\tau_1 = T^{-2}\sum_{ij} r_{i-j}`);
    - ``std``: of :math:`\hat s = (\text{mean } a^2)^{1/2}` (delta method,
      :math:`\operatorname{Var}\hat s^2 = 2 s_c^4 \tau_2 \overline{P^2} / HW`);
    - ``lag1``: of :math:`\hat r = \sum a_t a_{t+1} / \sum a_t^2` (delta method, exact
      fourth moments of the Gaussian).

    Every value is ``(C,)``; compare estimates with tolerances of a few of these.
    """
    _, H, W = world.shape
    n = H * W
    r1 = world.rho**dt_hours
    lags = np.subtract.outer(np.arange(length), np.arange(length))
    r_ij = r1 ** np.abs(lags)
    tau1 = r_ij.sum() / length**2
    tau2 = (r_ij**2).sum() / length**2
    p0 = world.spectrum[0, 0] / n
    p2 = (world.spectrum**2).mean() / n
    s = world.channel_std
    se = {
        "mean": s * np.sqrt(tau1 * p0 / members),
        "std": s * np.sqrt(2 * tau2 * p2 / members) / 2,
    }
    if length > 1:

        def rr(k: np.ndarray) -> np.ndarray:
            return r1 ** np.abs(k).astype(np.float64)

        m = length - 1
        k = np.subtract.outer(np.arange(m), np.arange(m))  # t' - t up to sign
        cov = (
            rr(k) ** 2
            + rr(k + 1) * rr(k - 1)
            - 2 * r1 * rr(k) * rr(k - 1)
            - 2 * r1 * rr(k) * rr(k + 1)
            + 2 * r1**2 * rr(k) ** 2
        )
        se["lag1"] = np.full_like(s, np.sqrt(cov.sum() / m**2 * p2 / members))
    return se
