r"""Generate one prior trajectory for one job: the function a generation task calls.

For a requested length :math:`T_0` the trajectory is sampled at :math:`T_{pad}` (see
:mod:`priorflow.blanket`) with each state's date, from
:math:`x = \sigma(t_{max})\,z`, :math:`z` drawn from the job's own generator, and trimmed back to
:math:`T_0` states.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import torch

from priorflow.blanket import BlanketDenoiser, BlanketPlan
from priorflow.dates import timestamps
from priorflow.model import Model
from priorflow.precision import resolve_precision
from priorflow.samplers import make_sampler
from priorflow.seeds import make_generator


@dataclass
class Trajectory:
    """One generated trajectory: ``latent (T0, *S)`` float32 on the CPU, ``timestamps (T0, 4)``."""

    latent: torch.Tensor
    timestamps: torch.Tensor
    record: dict[str, Any] = field(default_factory=dict)


def resolve_devices(devices: Sequence[str | torch.device] | None) -> list[torch.device]:
    """The devices to use: the given ones, every visible CUDA device, or the CPU."""
    if devices:
        return [torch.device(d) for d in devices]
    if torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def generate_trajectory(
    model: Model,
    trajectory_size: int,
    start: datetime,
    seed: int,
    *,
    overlap: int,
    sampler: str = "lms",
    sampler_config: dict[str, Any] | None = None,
    steps: int | None = None,
    fold: str = "symmetrical",
    precision: str | None = None,
    blanket_batch: int | None = None,
    devices: Sequence[str | torch.device] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Trajectory:
    """Sample one trajectory of ``trajectory_size`` states starting at ``start``.

    Arguments:
        model: the loaded model (card + backbone).
        trajectory_size: requested number of states :math:`T_0`.
        start: date and hour of the first state.
        seed: the job's seed (see :func:`priorflow.seeds.job_seed`).
        overlap: blanket overlap :math:`O`.
        sampler, sampler_config, steps: the sampler, its config and its number of steps
            (``None``: the model card's ``denoising_steps``).
        fold: blanket fold mode.
        precision: ``float32``, ``float16``, ``bfloat16`` or ``None`` (the training precision).
        blanket_batch: blankets per backbone call (``None``: all at once).
        devices: devices to evaluate blankets on; the first holds the sampler state.
        progress: called as ``progress(step, steps)`` after each sampler step.

    Returns:
        The trimmed :class:`Trajectory` with a small record: seconds, device, host,
        denoiser and blanket evaluations, the blanket batch used, padded size, number of
        blankets, finite, mean, std.
    """
    began = time.perf_counter()
    plan = BlanketPlan(trajectory_size, model.blanket_size, overlap)
    precision = resolve_precision(precision, model.card.precision)
    steps = model.card.denoising_steps if steps is None else steps
    devices = resolve_devices(devices)
    device = devices[0]

    denoiser = model.denoiser(precision).to(device)
    blanket_denoiser = BlanketDenoiser(
        denoiser, plan, fold=fold, batch_size=blanket_batch, devices=devices
    )
    dates = timestamps(start, plan.padded_size, model.dt_hours).to(device)
    schedule = model.schedule

    def trajectory_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return blanket_denoiser(x, sigma, dates)

    run = make_sampler(sampler, trajectory_denoiser, schedule, steps, **(sampler_config or {}))
    generator = make_generator(seed)
    shape = (1, plan.padded_size, *model.state_shape)
    z = torch.randn(shape, generator=generator, dtype=torch.float32)
    x = run((run.sigma(0) * z).to(device), generator=generator, progress=progress)

    latent = plan.trim(x)[0].float().cpu()
    finite = bool(torch.isfinite(latent).all())
    record = {
        "seconds": time.perf_counter() - began,
        "device": ",".join(str(d) for d in devices),
        "host": socket.gethostname(),
        "steps": steps,
        "precision": precision,
        "denoiser_evaluations": blanket_denoiser.calls,
        "blanket_evaluations": blanket_denoiser.blanket_evaluations,
        # blankets per backbone call in the end (lowered on out-of-memory); None: all at once
        "blanket_batch": blanket_denoiser.batch_size,
        "padded_size": plan.padded_size,
        "num_blankets": plan.num_blankets,
        "finite": finite,
        "mean": float(latent.mean()) if finite else float("nan"),
        "std": float(latent.std()) if finite else float("nan"),
    }
    return Trajectory(latent, plan.trim(dates, dim=0).cpu(), record)
