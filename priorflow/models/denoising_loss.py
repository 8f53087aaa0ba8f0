r"""The denoising loss of a blanket denoiser, and a validation loss that compares over time.

.. math::
    \mathcal{L} = \lambda(\sigma)\,\frac{1}{|x|}\,\|d(x + \sigma z, \sigma) - x\|^2,
    \qquad \lambda(\sigma) = \frac{1}{\sigma^2} + 1
"""

from __future__ import annotations

from typing import Any

import torch

from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.models.training_data import Batches, Split


def denoising_loss(
    denoiser: PreconditionedDenoiser,
    x: torch.Tensor,
    dates: torch.Tensor,
    sigma: torch.Tensor,
    z: torch.Tensor,
) -> torch.Tensor:
    r"""Per-blanket loss :math:`\lambda(\sigma)\,\mathrm{mean}((d(x + \sigma z, \sigma) - x)^2)`.

    Arguments:
        x: clean blankets ``(B, K, *S)``; dates ``(B, K, 4)``; sigma ``(B,)``; z like ``x``.

    Returns:
        ``(B,)`` float32.
    """
    shape = (-1,) + (1,) * (x.dim() - 1)
    d = denoiser(x + sigma.reshape(shape) * z, sigma, dates)
    weight = 1 / sigma**2 + 1
    return weight * (d - x).square().flatten(1).mean(dim=1)


def stratified_times(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` diffusion times, one in each of ``n`` equal bins of ``[0, 1]``, shuffled."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    order = torch.randperm(n, generator=generator)
    return (order + u) / n


class ValidationLoss:
    """Fixed validation blankets, times and noise: a loss that compares between evaluations."""

    def __init__(self, split: Split, batches: Batches, config: Any, schedule: Any):
        generator = torch.Generator().manual_seed(config.seed + 1)
        count = min(config.val_blankets, len(split.val))
        pick = torch.randperm(len(split.val), generator=generator)[:count]
        self.starts = split.val[pick]
        t = (torch.arange(count, dtype=torch.float64) + 0.5) / count
        self.sigma = schedule(t).float()
        shape = (count, config.blanket_size, *batches.states.shape[1:])
        self.z = torch.randn(shape, generator=generator)
        self.batches = batches
        self.batch_size = config.batch_size * 4

    @torch.no_grad()
    def __call__(self, denoiser: PreconditionedDenoiser) -> float:
        total = 0.0
        device = self.batches.device
        for i in range(0, len(self.starts), self.batch_size):
            part = slice(i, i + self.batch_size)
            x, dates = self.batches(self.starts[part])
            losses = denoising_loss(
                denoiser, x, dates, self.sigma[part].to(device), self.z[part].to(device)
            )
            total += float(losses.sum())
        return total / len(self.starts)
