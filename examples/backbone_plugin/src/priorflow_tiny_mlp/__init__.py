r"""A small backbone for priorflow: a per-blanket MLP conditioned on the noise level and hour.

priorflow calls a backbone as ``F(x, c_noise, dates)`` with ``x`` of shape ``(n, K, *S)``,
``c_noise = 10 log sigma`` of shape ``(n,)`` and ``dates`` ``(n, K, 4)`` (year, month, day, hour)
and expects ``(n, K, *S)`` back. This one flattens a blanket to :math:`K D` values
(:math:`D = \prod S`) and returns

.. math:: F(x) = W_2\,\mathrm{silu}(W_1 x + e(c_{noise}) + h(\text{hour})) ,

reshaped to the blanket. ``build_tiny_mlp`` is the factory the entry point registers; priorflow
passes the card's ``backbone.kwargs`` and, since it names that parameter, ``state_shape``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self, state_shape: tuple[int, ...], blanket_size: int, hidden: int = 64):
        super().__init__()
        width = blanket_size * math.prod(state_shape)
        self.inp = nn.Linear(width, hidden)
        self.noise = nn.Linear(1, hidden)
        self.hour = nn.Linear(2, hidden)
        self.out = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        angle = dates[:, 0, 3].to(x.dtype) * (2 * math.pi / 24)
        hour = torch.stack([angle.sin(), angle.cos()], dim=-1)
        hidden = self.inp(x.reshape(n, -1)) + self.noise(c_noise.reshape(n, 1) / 10)
        return self.out(nn.functional.silu(hidden + self.hour(hour))).reshape(x.shape)


def build_tiny_mlp(state_shape: tuple[int, ...], blanket_size: int, hidden: int = 64) -> TinyMLP:
    """The factory ``tiny_mlp`` names: a card's ``backbone.kwargs`` come here."""
    if blanket_size < 1 or hidden < 1:
        raise ValueError("blanket_size and hidden must be >= 1")
    return TinyMLP(tuple(state_shape), blanket_size, hidden)
