r"""Samplers of the variance-exploding diffusion, from pure noise to a trajectory.

Every sampler starts from :math:`x = \sigma(t_{max})\,z` (given by the caller) and walks the time
grid :math:`t_i = t_{max} (1 - i / \text{steps})`, :math:`i = 0 .. \text{steps}`, whose last target
:math:`t = 0` is :math:`\sigma_{min}`. The denoiser :math:`d(x, \sigma)` works on whole
trajectories ``(B, T_pad, *S)``. Noise levels and coefficients are computed in float64 and
applied in float32; every random draw uses the caller's ``generator`` (on the CPU, then moved to
the device), so a seed gives the same sample on any device.

The family (:mod:`~priorflow.core.ode_samplers`, :mod:`~priorflow.core.sde_samplers`):

================  ==============================================================================
``ddim``          :math:`x \leftarrow x - (1 - \sigma_{i+1}/\sigma_i)(x - d(x, \sigma_i))`
``ddpm``          :math:`\tau = 1 - (\sigma_{i+1}/\sigma_i)^2`,
                  :math:`x \leftarrow x - \tau (x - d(x, \sigma_i)) + \sigma_{i+1}\sqrt{\tau}\,z`
``pc``            ``corrections`` Langevin steps
                  :math:`x \leftarrow x + \delta (d(x, \sigma_i) - x) + \sqrt{2\delta}\,\sigma_i z`,
                  then the ddim predictor
``lms``           Adams-Bashforth of order ``order`` on :math:`dx/d\sigma = (x - d(x, \sigma))/\sigma`
``rewind``        ddim down ``k`` grid steps, then re-noise up to the next outer time
``heun``          Heun's second-order method on the ODE, two evaluations per step
``dpmpp``         DPM-Solver++ multistep (order 2 or 3) in :math:`\lambda = -\log\sigma`
================  ==============================================================================

Every sampler also takes ``grid`` (:mod:`~priorflow.core.grids`): ``uniform`` (default, Appa's),
``karras`` or ``loglinear``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from priorflow.core.grids import GRIDS
from priorflow.core.ode_samplers import (
    DDIMSampler,
    DPMPPSampler,
    HeunSampler,
    LMSSampler,
    adams_bashforth_coefficients,
)
from priorflow.core.sampler_base import COMMON_DEFAULTS, Progress, Sampler, TrajectoryDenoiser
from priorflow.core.schedules import Schedule
from priorflow.core.sde_samplers import DDPMSampler, PCSampler, RewindSampler

__all__ = [
    "SAMPLERS",
    "SAMPLER_CLASSES",
    "Progress",
    "Sampler",
    "SamplerOptionError",
    "TrajectoryDenoiser",
    "adams_bashforth_coefficients",
    "check_sampler_config",
    "make_sampler",
    "sampler_class",
]


SAMPLER_CLASSES: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (
        PCSampler,
        DDPMSampler,
        DDIMSampler,
        RewindSampler,
        LMSSampler,
        HeunSampler,
        DPMPPSampler,
    )
}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_CLASSES)

#: Every sampler option: its type, its bound and how to say the bound.
_OPTIONS: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "corrections": (int, lambda v: 0 <= v <= 100, "a whole number from 0 to 100"),
    "delta": (float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "order": (int, lambda v: 1 <= v <= 6, "a whole number from 1 to 6"),
    "rewind_after": (int, lambda v: 1 <= v <= 10_000, "a whole number from 1 to 10000"),
    "jump": (bool, lambda v: True, "true or false"),
    "grid": (str, lambda v: v in GRIDS, f"one of {', '.join(GRIDS)}"),
}
#: Options whose bounds depend on the sampler.
_SAMPLER_OPTIONS: dict[tuple[str, str], tuple[type, Callable[[Any], bool], str]] = {
    ("dpmpp", "order"): (int, lambda v: v in (2, 3), "2 or 3"),
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
    defaults = {**COMMON_DEFAULTS, **sampler_class(name).defaults}
    resolved = dict(defaults)
    for key, value in dict(config or {}).items():
        if key not in defaults:
            allowed = ", ".join(defaults) or "no keys"
            raise SamplerOptionError(key, f"unknown key for sampler {name!r}; it takes {allowed}")
        kind, valid, description = _SAMPLER_OPTIONS.get((name, key), _OPTIONS[key])
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
    """Build the sampler ``name`` with its ``config`` (checked, completed with defaults)."""
    return sampler_class(name)(denoiser, schedule, steps, **check_sampler_config(name, config))
