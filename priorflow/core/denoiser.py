r"""The preconditioned denoiser around a backbone (EDM preconditioning, unit data std).

For a backbone :math:`F(x, c_{noise}, \text{dates})`,

.. math::
    d(x, \sigma) = c_{skip}\,x + c_{out}\,F(c_{in}\,x,\ c_{noise},\ \text{dates}),
    \quad c_{skip} = \frac{1}{\sigma^2 + 1},\ c_{out} = \frac{\sigma}{\sqrt{\sigma^2 + 1}},\
    c_{in} = \frac{1}{\sqrt{\sigma^2 + 1}},\ c_{noise} = 10 \log\sigma,

an estimate of :math:`E[x \mid x_\sigma]` for :math:`x_\sigma = x + \sigma z`.
"""

from __future__ import annotations

import torch
from torch import nn

from priorflow.core.precision import autocast


class PreconditionedDenoiser(nn.Module):
    r"""Blanket denoiser :math:`d(x, \sigma)` with EDM preconditioning.

    Arguments:
        backbone: network ``F(x (n, K, *S), c_noise (n,), dates (n, K, 4)) -> (n, K, *S)``.
        precision: ``float32``, ``float16`` or ``bfloat16``; the backbone alone runs under
            autocast, the skip connection and coefficients are float32.
    """

    def __init__(self, backbone: nn.Module, precision: str = "float32"):
        super().__init__()
        self.backbone = backbone
        self.precision = precision

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        r"""Denoise blankets.

        Arguments:
            x: noisy blankets :math:`x_\sigma`, shape ``(n, K, *S)``.
            sigma: noise levels, shape ``(n,)`` or a scalar.
            dates: ``(year, month, day, hour)`` of every state, shape ``(n, K, 4)``.

        Returns:
            The denoised blankets, shape ``(n, K, *S)``, float32.
        """
        x = x.float()
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        shape = (-1,) + (1,) * (x.dim() - 1)
        c_skip = (1 / (sigma**2 + 1)).reshape(shape)
        c_out = (sigma / torch.sqrt(sigma**2 + 1)).reshape(shape)
        c_in = (1 / torch.sqrt(sigma**2 + 1)).reshape(shape)
        c_noise = 10 * torch.log(sigma)
        with autocast(self.precision, x.device):
            f = self.backbone(c_in * x, c_noise, dates)
        return c_skip * x + c_out * f.float()
