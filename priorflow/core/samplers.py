r"""Samplers of the variance-exploding diffusion, from pure noise to a trajectory.

Every sampler starts from :math:`x = \sigma(t_{max})\,z` (given by the caller) and walks the time
grid :math:`t_i = t_{max} (1 - i / \text{steps})`, :math:`i = 0 .. \text{steps}`, whose last target
:math:`t = 0` is :math:`\sigma_{min}`. The denoiser :math:`d(x, \sigma)` works on whole
trajectories ``(B, T_pad, *S)``. Noise levels and coefficients are computed in float64 and
applied in float32; every random draw uses the caller's ``generator`` (on the CPU, then moved to
the device), so a seed gives the same sample on any device.

================  ==============================================================================
``ddim``          :math:`x \leftarrow x - (1 - \sigma_{i+1}/\sigma_i)(x - d(x, \sigma_i))`
``ddpm``          :math:`\tau = 1 - (\sigma_{i+1}/\sigma_i)^2`,
                  :math:`x \leftarrow x - \tau (x - d(x, \sigma_i)) + \sigma_{i+1}\sqrt{\tau}\,z`
``pc``            ``corrections`` Langevin steps
                  :math:`x \leftarrow x + \delta (d(x, \sigma_i) - x) + \sqrt{2\delta}\,\sigma_i z`,
                  then the ddim predictor
``lms``           Adams-Bashforth of order ``order`` on :math:`dx/d\sigma = (x - d(x, \sigma))/\sigma`
``rewind``        ddim down ``k`` grid steps, then re-noise up to the next outer time
================  ==============================================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from priorflow.core.schedules import Schedule

TrajectoryDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


class Sampler(ABC):
    r"""A sampler over the time grid :math:`t_i = t_{max}(1 - i/\text{steps})`.

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
        self.config = check_sampler_config(self.name, config)
        for key, value in self.config.items():
            setattr(self, key, value)
        grid = torch.linspace(schedule.t_max, 0.0, steps + 1, dtype=torch.float64)
        grid[-1] = 0.0
        self.times = grid
        self.sigmas = schedule(grid)

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
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Sample from ``x_initial`` (already scaled by :math:`\\sigma(t_{max})`), float32."""
        x = x_initial.to(torch.float32)

        def noise() -> torch.Tensor:
            z = torch.randn(
                x.shape,
                generator=generator,
                dtype=torch.float32,
                device=generator.device if generator is not None else x.device,
            )
            return z.to(x.device)

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


SAMPLER_CLASSES: dict[str, type[Sampler]] = {
    cls.name: cls for cls in (PCSampler, DDPMSampler, DDIMSampler, RewindSampler, LMSSampler)
}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_CLASSES)

#: Every sampler option: its type, its bound and how to say the bound.
_OPTIONS: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "corrections": (int, lambda v: 0 <= v <= 100, "a whole number from 0 to 100"),
    "delta": (float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "order": (int, lambda v: 1 <= v <= 6, "a whole number from 1 to 6"),
    "rewind_after": (int, lambda v: 1 <= v <= 10_000, "a whole number from 1 to 10000"),
    "jump": (bool, lambda v: True, "true or false"),
}


class SamplerOptionError(ValueError):
    """A sampler name or option that cannot be used; ``key`` is the option (``None``: the name)."""

    def __init__(self, key: str | None, message: str):
        super().__init__(message if key is None else f"{key}: {message}")
        self.key = key
        self.reason = message


def sampler_class(name: str) -> type[Sampler]:
    """The sampler class called ``name``; :class:`SamplerOptionError` naming the choices."""
    if name not in SAMPLER_CLASSES:
        raise SamplerOptionError(
            None, f"{name!r} is not a sampler; choose one of {', '.join(SAMPLERS)}"
        )
    return SAMPLER_CLASSES[name]


def check_sampler_config(name: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a sampler's options; return them completed with the sampler's defaults.

    Raises :class:`SamplerOptionError` (its ``key`` names the option) for an unknown sampler,
    an unknown option or a bad value.
    """
    defaults = sampler_class(name).defaults
    resolved = dict(defaults)
    for key, value in dict(config or {}).items():
        if key not in defaults:
            allowed = ", ".join(defaults) or "no keys"
            raise SamplerOptionError(key, f"unknown key for sampler {name!r}; it takes {allowed}")
        kind, valid, description = _OPTIONS[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (
            not isinstance(value, kind)
            or (kind is int and isinstance(value, bool))
            or not valid(value)
        ):
            raise SamplerOptionError(key, f"{value!r} is not valid; it must be {description}")
        resolved[key] = value
    return resolved


def make_sampler(
    name: str, denoiser: TrajectoryDenoiser, schedule: Schedule, steps: int, **config: Any
) -> Sampler:
    """Build the sampler ``name`` (pc, ddpm, ddim, rewind or lms) with its ``config``."""
    return sampler_class(name)(denoiser, schedule, steps, **config)
