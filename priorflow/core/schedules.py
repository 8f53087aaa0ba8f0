r"""Noise schedules of the variance-exploding diffusion, :math:`t \mapsto \sigma(t)`.

All schedules map diffusion time :math:`t \in [0, t_{max}]` to a noise level between
:math:`\sigma_{min}` (at :math:`t = 0`) and :math:`\sigma_{max}` (at :math:`t = 1`). They are
evaluated in float64 whatever the model precision: in bfloat16 the rectified schedule's
:math:`\sigma(1)` overflows to ``inf``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

Time = float | torch.Tensor


class Schedule(ABC):
    r"""A noise schedule :math:`\sigma(t)`; call it with a float or a tensor of times.

    Tensors are promoted to float64 (or kept in float64) for evaluation; the result has the
    input's shape. Floats give floats.
    """

    name: str

    def __init__(self, sigma_min: float = 1e-3, sigma_max: float = 1e3, t_max: float = 1.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        if not 0 < t_max <= 1:
            raise ValueError(f"t_max must lie in (0, 1], got {t_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.t_max = float(t_max)

    def __call__(self, t: Time) -> Time:
        if isinstance(t, torch.Tensor):
            return self._sigma(t.to(torch.float64))
        return float(self._sigma(torch.tensor(float(t), dtype=torch.float64)))

    @abstractmethod
    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(t)` for a float64 tensor."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g},"
            f" t_max={self.t_max:g})"
        )


class RectifiedSchedule(Schedule):
    r"""Rectified flow schedule.

    .. math:: \sigma(t) = \frac{t + (1 - t)\,\sigma_{min}}{t\,(1/\sigma_{max} - 1) + 1}
    """

    name = "rectified"

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return (t + (1 - t) * self.sigma_min) / (t * (1 / self.sigma_max - 1) + 1)


class LogLinearSchedule(Schedule):
    r"""Log-linear schedule.

    .. math:: \sigma(t) = \exp(\log\sigma_{min} + t\,(\log\sigma_{max} - \log\sigma_{min}))
    """

    name = "loglinear"

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        log_min, log_max = math.log(self.sigma_min), math.log(self.sigma_max)
        return torch.exp(log_min + t * (log_max - log_min))


class LogLogitSchedule(Schedule):
    r"""Log-logit schedule with :math:`\rho = 2`.

    .. math::
        \sigma(t) = \sqrt{\sigma_{min}\sigma_{max}}\,
            \exp(\rho\,\mathrm{logit}(t (1 - 2\epsilon) + \epsilon)),
        \quad \epsilon = (\sigma_{min}/\sigma_{max})^{1/(2\rho)}

    so that :math:`\sigma(0) \approx \sigma_{min}` and :math:`\sigma(1) \approx \sigma_{max}`
    (within the factor :math:`(1 - \epsilon)^{\mp\rho}`).
    """

    name = "loglogit"
    rho = 2.0

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        eps = (self.sigma_min / self.sigma_max) ** (1 / (2 * self.rho))
        u = t * (1 - 2 * eps) + eps
        return math.sqrt(self.sigma_min * self.sigma_max) * torch.exp(
            self.rho * torch.log(u / (1 - u))
        )


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (RectifiedSchedule, LogLinearSchedule, LogLogitSchedule)
}


def make_schedule(
    name: str, sigma_min: float = 1e-3, sigma_max: float = 1e3, t_max: float = 1.0
) -> Schedule:
    """Build the schedule ``name`` (``rectified``, ``loglinear`` or ``loglogit``)."""
    return schedule_class(name)(sigma_min=sigma_min, sigma_max=sigma_max, t_max=t_max)


def schedule_class(name: str) -> type[Schedule]:
    """The schedule class called ``name``; :class:`ValueError` naming the choices otherwise."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not a schedule; choose one of {', '.join(SCHEDULES)}"
        ) from None
