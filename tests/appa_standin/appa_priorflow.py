"""The stand-in's network wrapped as a priorflow backbone (an ``nn.Module`` class a card names).

Same parameters (same state-dict keys) as ``appa.diffusion.ViDiT``; it takes priorflow's call,
``(n, K, *S)`` blankets, so a lap's checkpoint copied into a priorflow model directory is the
same model.
"""

from __future__ import annotations

from appa.diffusion import ViDiT


class WrappedViDiT(ViDiT):
    def forward(self, x, c_noise, dates):
        return super().forward(x.reshape(x.shape[0], -1), c_noise, dates).reshape(x.shape)
