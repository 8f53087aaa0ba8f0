"""The sampler family's common part: the noise-level grid, the loop's helpers, the options.

A sampler is one small class: its update rule in :meth:`Sampler.run`, its options declared in
``defaults`` (checked by :func:`priorflow.core.samplers.check_sampler_config`). Every sampler
takes the ``grid`` option (:mod:`priorflow.core.grids`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from priorflow.core.grids import noise_levels
from priorflow.core.schedules import Schedule

TrajectoryDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]
#: The options every sampler takes.
COMMON_DEFAULTS: dict[str, Any] = {"grid": "uniform"}


def draw_noise(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | Sequence[torch.Generator] | None,
) -> torch.Tensor:
    """Standard normal noise of ``shape``, float32: from one generator, or row by row from one
    generator per row of the batch (``shape[0]`` of them)."""
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else None
        return torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
    generators = list(generator)
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    return torch.stack(
        [torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in generators]
    )


class Sampler(ABC):
    r"""A sampler over the noise levels :math:`\sigma_0 > \dots > \sigma_{steps}` of its ``grid``.

    Arguments:
        denoiser: ``d(x, sigma)`` on ``(B, T_pad, *S)`` trajectories, sigma a float32 scalar tensor.
        schedule: the noise schedule :math:`\sigma(t)`.
        steps: number of grid steps.

    Calling ``sampler(x_initial, generator, progress)`` returns the sample at :math:`t = 0`.
    ``evaluations`` is the number of denoiser calls one call makes.
    """

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, denoiser: TrajectoryDenoiser, schedule: Schedule, steps: int, **config: Any
    ):
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps: {steps!r} must be a positive integer")
        self.denoiser = denoiser
        self.schedule = schedule
        self.steps = steps
        self.config = dict(config)  # checked by make_sampler
        for key, value in {**COMMON_DEFAULTS, **self.defaults, **self.config}.items():
            setattr(self, key, value)
        self.sigmas = noise_levels(schedule, steps, self.grid)

    @property
    def evaluations(self) -> int:
        """Denoiser calls per sample: one per step unless a sampler says otherwise."""
        return self.steps

    @abstractmethod
    def run(
        self, x: torch.Tensor, noise: Callable[[], torch.Tensor], progress: Progress
    ) -> torch.Tensor:
        """Integrate from ``x`` at :math:`t_{max}` to :math:`t = 0`."""

    def __call__(
        self,
        x_initial: torch.Tensor,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Sample from ``x_initial`` (already scaled by :math:`\\sigma(t_{max})`), float32.

        ``generator``: one for the whole batch, or one per trajectory of the batch (each draws
        its own noise: a trajectory does not depend on what it is batched with).
        """
        x = x_initial.to(torch.float32)

        def noise() -> torch.Tensor:
            return draw_noise(x.shape, generator).to(x.device)

        with torch.no_grad():
            return self.run(x, noise, progress or (lambda i, n: None))

    def sigma(self, i: int) -> float:
        """:math:`\\sigma(t_i)` as a Python float (float64)."""
        return float(self.sigmas[i])

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """:math:`d(x, \\sigma)` with sigma as a float32 scalar tensor on ``x``'s device."""
        return self.denoiser(x, torch.tensor(sigma, dtype=torch.float32, device=x.device))

    def ddim_step(self, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        """Deterministic step :math:`x + (\\sigma'/\\sigma - 1)(x - d)`, i.e. toward :math:`d`."""
        ratio = sigma_next / sigma
        return torch.lerp(self.denoise(x, sigma), x, ratio)

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}(steps={self.steps}{', ' + config if config else ''})"
