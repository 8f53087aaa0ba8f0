r"""Stochastic samplers: each step draws fresh noise from the job's generator.

================  ==============================================================================
``ddpm``          :math:`\tau = 1 - (\sigma_{i+1}/\sigma_i)^2`,
                  :math:`x \leftarrow x - \tau (x - d(x, \sigma_i)) + \sigma_{i+1}\sqrt{\tau}\,z`
``pc``            ``corrections`` Langevin steps
                  :math:`x \leftarrow x + \delta (d(x, \sigma_i) - x) + \sqrt{2\delta}\,\sigma_i z`,
                  then the ddim predictor
``rewind``        ddim down ``k`` grid steps, then re-noise up to the next outer level
================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from priorflow.core.sampler_base import Progress, Sampler


class DDPMSampler(Sampler):
    r"""Ancestral DDPM: :math:`\tau = 1 - (\sigma_{i+1}/\sigma_i)^2`,
    :math:`x \leftarrow x - \tau (x - d(x, \sigma_i)) + \sigma_{i+1}\sqrt{\tau}\,z`.

    Ho et al., "Denoising diffusion probabilistic models" (2020).
    """

    name = "ddpm"

    def run(
        self, x: torch.Tensor, noise: Callable[[], torch.Tensor], progress: Progress
    ) -> torch.Tensor:
        for i in range(self.steps):
            sigma, sigma_next = self.sigma(i), self.sigma(i + 1)
            tau = 1 - (sigma_next / sigma) ** 2
            x = torch.lerp(x, self.denoise(x, sigma), tau) + (sigma_next * tau**0.5) * noise()
            progress(i + 1, self.steps)
        return x


class PCSampler(Sampler):
    r"""Predictor-corrector: at each level ``corrections`` Langevin steps
    :math:`x \leftarrow x + \delta (d(x, \sigma_i) - x) + \sqrt{2\delta}\,\sigma_i z`
    (step size :math:`\delta\sigma_i^2` on the score :math:`(d - x)/\sigma_i^2`), then a ddim step.

    Song et al., "Score-based generative modeling through SDEs" (2021).
    """

    name = "pc"
    defaults: ClassVar[dict[str, Any]] = {"corrections": 1, "delta": 0.01}

    @property
    def evaluations(self) -> int:
        return self.steps * (self.corrections + 1)

    def run(
        self, x: torch.Tensor, noise: Callable[[], torch.Tensor], progress: Progress
    ) -> torch.Tensor:
        for i in range(self.steps):
            sigma = self.sigma(i)
            for _ in range(self.corrections):
                x = torch.lerp(x, self.denoise(x, sigma), self.delta)
                x = x + ((2 * self.delta) ** 0.5 * sigma) * noise()
            x = self.ddim_step(x, sigma, self.sigma(i + 1))
            progress(i + 1, self.steps)
        return x


class RewindSampler(Sampler):
    r"""Rewinding sampler: denoise ahead, then re-noise back.

    With :math:`\Delta t = t_{max}/\text{steps}`, at each outer time :math:`t_i` let
    :math:`k = \min(\text{rewind\_after}, \text{steps} - i)` (that is :math:`\mathrm{round}(t/\Delta t)`
    capped) and :math:`u = t_i - k\,\Delta t`: move to :math:`u` by one ddim step (``jump``) or by
    ``k`` grid ddim steps, then re-noise to the next outer time,
    :math:`x \leftarrow x_u + \sqrt{\sigma(t_i - \Delta t)^2 - \sigma(u)^2}\,z`.

    Known to be under-dispersed: the re-noising restores the marginal variance of white noise only,
    not the correlations the skipped steps would have built, so samples are smoother and less
    spread than the prior. Prefer ``lms`` or ``pc`` for calibrated ensembles.
    """

    name = "rewind"
    defaults: ClassVar[dict[str, Any]] = {"rewind_after": 16, "jump": True}

    @property
    def evaluations(self) -> int:
        if self.jump:
            return self.steps
        return sum(min(self.rewind_after, self.steps - i) for i in range(self.steps))

    def run(
        self, x: torch.Tensor, noise: Callable[[], torch.Tensor], progress: Progress
    ) -> torch.Tensor:
        for i in range(self.steps):
            target = i + min(self.rewind_after, self.steps - i)  # grid index of u
            if self.jump:
                x_u = self.ddim_step(x, self.sigma(i), self.sigma(target))
            else:
                x_u = x
                for j in range(i, target):
                    x_u = self.ddim_step(x_u, self.sigma(j), self.sigma(j + 1))
            if target == i + 1:
                x = x_u
            else:
                gap = max(self.sigma(i + 1) ** 2 - self.sigma(target) ** 2, 0.0) ** 0.5
                x = x_u + gap * noise()
            progress(i + 1, self.steps)
        return x
