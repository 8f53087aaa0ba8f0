r"""Deterministic samplers: the probability-flow ODE
:math:`dx/d\sigma = (x - d(x, \sigma))/\sigma`, integrated from :math:`\sigma_0` to
:math:`\sigma_{min}`.

================  ==============================================================================
``ddim``          first order: :math:`x \leftarrow x - (1 - \sigma_{i+1}/\sigma_i)(x - d(x, \sigma_i))`
``lms``           Adams-Bashforth of order ``order`` in :math:`\sigma` (Appa's default)
``heun``          second order, two evaluations per step (Karras et al. 2022, Algorithm 1)
``dpmpp``         DPM-Solver++ multistep of order ``order`` (2 or 3) in
                  :math:`\lambda = -\log\sigma`, one evaluation per step (Lu et al. 2022)
================  ==============================================================================

With a linear denoiser each is a linear map of its initial noise, which is how
``tests/core/test_samplers.py`` checks them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from priorflow.core.sampler_base import Progress, Sampler


class DDIMSampler(Sampler):
    r"""Deterministic DDIM: :math:`x \leftarrow x - (1 - \sigma_{i+1}/\sigma_i)(x - d(x, \sigma_i))`.

    Song et al., "Denoising diffusion implicit models" (2021), in the sigma parametrisation.
    """

    name = "ddim"

    def run(
        self, x: torch.Tensor, noise: Callable[[], torch.Tensor], progress: Progress
    ) -> torch.Tensor:
        for i in range(self.steps):
            x = self.ddim_step(x, self.sigma(i), self.sigma(i + 1))
            progress(i + 1, self.steps)
        return x


def adams_bashforth_coefficients(nodes: np.ndarray, lo: float, hi: float) -> np.ndarray:
    r"""Integrals :math:`c_j = \int_{lo}^{hi} \ell_j(s)\,ds` of the Lagrange basis on ``nodes``.

    Computed in float64 on the variable :math:`u = (s - lo)/(hi - lo)` for conditioning.
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    width = hi - lo
    u_nodes = (nodes - lo) / width
    coefficients = np.empty(len(nodes))
    for j in range(len(nodes)):
        others = np.delete(u_nodes, j)
        basis = np.polynomial.Polynomial([1.0])
        if len(others):
            basis = np.polynomial.Polynomial.fromroots(others) / np.prod(u_nodes[j] - others)
        integral = basis.integ()
        coefficients[j] = (integral(1.0) - integral(0.0)) * width
    return coefficients


class LMSSampler(Sampler):
    r"""Linear multistep (Adams-Bashforth) on the probability-flow ODE in :math:`\sigma`.

    .. math:: \frac{dx}{d\sigma} = \frac{x - d(x, \sigma)}{\sigma}, \qquad
        x_{i+1} = x_i + \sum_{j} c_j f_j, \quad
        c_j = \int_{\sigma_i}^{\sigma_{i+1}} \ell_j(\sigma)\,d\sigma

    with the last :math:`m = \min(\text{order}, i + 1)` derivatives :math:`f_j` at
    :math:`\sigma_{i-m+1..i}` and :math:`\ell_j` their Lagrange basis (coefficients in float64).
    Karras et al., "Elucidating the design space of diffusion-based generative models" (2022).
    """

    name = "lms"
    defaults: ClassVar[dict[str, Any]] = {"order": 3}

    def run(
        self, x: torch.Tensor, noise: Callable[[], torch.Tensor], progress: Progress
    ) -> torch.Tensor:
        sigmas = self.sigmas.numpy()
        derivatives: list[torch.Tensor] = []
        for i in range(self.steps):
            sigma = float(sigmas[i])
            derivatives.append((x - self.denoise(x, sigma)) / sigma)
            derivatives = derivatives[-self.order :]
            nodes = sigmas[i - len(derivatives) + 1 : i + 1]
            coefficients = adams_bashforth_coefficients(nodes, sigma, float(sigmas[i + 1]))
            for c, f in zip(coefficients, derivatives, strict=True):
                x = x + float(c) * f
            progress(i + 1, self.steps)
        return x


class HeunSampler(Sampler):
    r"""Heun's second-order method on the probability-flow ODE (Karras et al., "Elucidating
    the design space of diffusion-based generative models", 2022, Algorithm 1 without churn):

    .. math::
        f_i = \frac{x_i - d(x_i, \sigma_i)}{\sigma_i},\quad
        \tilde x = x_i + (\sigma_{i+1} - \sigma_i) f_i,\quad
        x_{i+1} = x_i + (\sigma_{i+1} - \sigma_i)\,\frac{f_i + \tilde f}{2},\quad
        \tilde f = \frac{\tilde x - d(\tilde x, \sigma_{i+1})}{\sigma_{i+1}}

    Two denoiser evaluations per step (the grid ends at :math:`\sigma_{min} > 0`, so every step
    is corrected).
    """

    name = "heun"

    @property
    def evaluations(self) -> int:
        return 2 * self.steps

    def run(
        self, x: torch.Tensor, noise: Callable[[], torch.Tensor], progress: Progress
    ) -> torch.Tensor:
        for i in range(self.steps):
            sigma, sigma_next = self.sigma(i), self.sigma(i + 1)
            slope = (x - self.denoise(x, sigma)) / sigma
            euler = x + (sigma_next - sigma) * slope
            corrected = (euler - self.denoise(euler, sigma_next)) / sigma_next
            x = x + (0.5 * (sigma_next - sigma)) * (slope + corrected)
            progress(i + 1, self.steps)
        return x


class DPMPPSampler(Sampler):
    r"""DPM-Solver++ multistep (Lu et al., "DPM-Solver++: fast solver for guided sampling of
    diffusion probabilistic models", 2022), data prediction, in :math:`\lambda = -\log\sigma`.

    With :math:`h = \lambda_{i+1} - \lambda_i`, :math:`D_i = d(x_i, \sigma_i)` and
    :math:`\varphi_1 = e^{-h} - 1`:

    - order 1 (DDIM): :math:`x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i} x_i - \varphi_1 D_i`;
    - order 2: with :math:`r_0 = h_{i-1}/h`, :math:`D^{(1)} = (D_i - D_{i-1})/r_0`,
      :math:`x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i} x_i - \varphi_1 D_i
      - \tfrac12 \varphi_1 D^{(1)}`;
    - order 3: with :math:`r_1 = h_{i-2}/h`, :math:`D^{(1)}_0 = (D_i - D_{i-1})/r_0`,
      :math:`D^{(1)}_1 = (D_{i-1} - D_{i-2})/r_1`,
      :math:`D^{(1)} = D^{(1)}_0 + \frac{r_0}{r_0 + r_1}(D^{(1)}_0 - D^{(1)}_1)`,
      :math:`D^{(2)} = \frac{D^{(1)}_0 - D^{(1)}_1}{r_0 + r_1}`,
      :math:`\varphi_2 = \varphi_1/h + 1`, :math:`\varphi_3 = \varphi_2/h - \tfrac12`:
      :math:`x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i} x_i - \varphi_1 D_i + \varphi_2 D^{(1)}
      - \varphi_3 D^{(2)}`.

    The first steps use the orders their history allows (1, then 2). One evaluation per step;
    coefficients in float64.
    """

    name = "dpmpp"
    defaults: ClassVar[dict[str, Any]] = {"order": 2}

    def run(
        self, x: torch.Tensor, noise: Callable[[], torch.Tensor], progress: Progress
    ) -> torch.Tensor:
        lam = [-math.log(self.sigma(i)) for i in range(self.steps + 1)]
        history: list[torch.Tensor] = []
        for i in range(self.steps):
            sigma, sigma_next = self.sigma(i), self.sigma(i + 1)
            history = [*history, self.denoise(x, sigma)][-self.order :]
            h = lam[i + 1] - lam[i]
            phi1 = math.expm1(-h)
            order = len(history)
            x = (sigma_next / sigma) * x - phi1 * history[-1]
            if order >= 2:
                r0 = (lam[i] - lam[i - 1]) / h
                first0 = (history[-1] - history[-2]) / r0
                if order == 2:
                    x = x - (0.5 * phi1) * first0
                else:
                    r1 = (lam[i - 1] - lam[i - 2]) / h
                    first1 = (history[-2] - history[-3]) / r1
                    first = first0 + (r0 / (r0 + r1)) * (first0 - first1)
                    second = (first0 - first1) / (r0 + r1)
                    phi2 = phi1 / h + 1
                    phi3 = phi2 / h - 0.5
                    x = x + phi2 * first - phi3 * second
            progress(i + 1, self.steps)
        return x
