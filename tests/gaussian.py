r"""A Gaussian prior whose blanket denoiser is exact, for testing the core's statistics.

The prior is AR(1) in time with correlation :math:`\rho` and unit variance, independent across the
``D`` state dimensions: :math:`C_{ij} = \rho^{|i - j|}`. For a blanket the exact denoiser is
:math:`E[x \mid x_\sigma] = C_K (C_K + \sigma^2 I)^{-1} x_\sigma`.
"""

from __future__ import annotations

import numpy as np
import torch


def ar1_covariance(length: int, rho: float = 0.9) -> np.ndarray:
    """:math:`C_{ij} = \\rho^{|i-j|}`, shape ``(length, length)``, float64."""
    lags = np.abs(np.arange(length)[:, None] - np.arange(length)[None, :])
    return rho**lags


def posterior_matrix(cov: np.ndarray, sigma: float) -> np.ndarray:
    """:math:`C (C + \\sigma^2 I)^{-1}` in float64."""
    return np.linalg.solve(cov + sigma**2 * np.eye(len(cov)), cov).T


class ExactBlanketDenoiser(torch.nn.Module):
    """``d(x (n, K, D), sigma (n,), dates) = C_K (C_K + sigma^2 I)^{-1} x`` per blanket."""

    def __init__(self, blanket_size: int, rho: float = 0.9):
        super().__init__()
        self.cov = ar1_covariance(blanket_size, rho)
        self.calls = 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = torch.empty_like(x)
        for value in torch.unique(sigma):
            rows = sigma == value
            matrix = torch.as_tensor(posterior_matrix(self.cov, float(value)), dtype=x.dtype)
            out[rows] = torch.einsum("kj,njd->nkd", matrix.to(x.device), x[rows])
        return out
