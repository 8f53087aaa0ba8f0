r"""Generate one prior trajectory: sample it at the padded length, trim it back.

For a requested length :math:`T_0` the trajectory is sampled at :math:`T_{pad}` (see
:mod:`priorflow.core.blanket`) with each state's date, from
:math:`x = \sigma(t_{max})\,z`, :math:`z` drawn from the job's own generator, and trimmed back to
:math:`T_0` states. The model is anything that has what :class:`SamplingModel` lists (a loaded
:class:`priorflow.models.Model` does).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import torch

from priorflow.core.blanket import BlanketDenoiser, BlanketFn, BlanketPlan
from priorflow.core.dates import timestamps
from priorflow.core.devices import resolve_devices
from priorflow.core.precision import resolve_precision
from priorflow.core.sampler_base import draw_noise
from priorflow.core.samplers import make_sampler
from priorflow.core.schedules import Schedule
from priorflow.core.seeds import make_generator


class SamplingModel(Protocol):
    """What sampling needs of a model: its blanket, time step, state shape, schedule, defaults
    and the preconditioned blanket denoiser in a precision."""

    @property
    def blanket_size(self) -> int: ...

    @property
    def dt_hours(self) -> int: ...

    @property
    def state_shape(self) -> tuple[int, ...]: ...

    @property
    def schedule(self) -> Schedule: ...

    @property
    def default_steps(self) -> int: ...

    @property
    def trained_precision(self) -> str: ...

    def denoiser(self, precision: str = "float32") -> torch.nn.Module: ...


@dataclass
class Trajectory:
    """One generated trajectory: ``latent (T0, *S)`` float32 on the CPU, ``timestamps (T0, 4)``."""

    latent: torch.Tensor
    timestamps: torch.Tensor
    record: dict[str, Any] = field(default_factory=dict)


def generate_trajectory(
    model: SamplingModel,
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
        model: the loaded model (:class:`SamplingModel`).
        trajectory_size: requested number of states :math:`T_0`.
        start: date and hour of the first state.
        seed: the job's seed (see :func:`priorflow.core.seeds.job_seed`).
        overlap: blanket overlap :math:`O`.
        sampler, sampler_config, steps: the sampler, its config and its number of steps
            (``None``: the model's default).
        fold: blanket fold mode.
        precision: ``float32``, ``float16``, ``bfloat16`` or ``None`` (the training precision).
        blanket_batch: blankets per backbone call (``None``: all at once; halved on
            out-of-memory).
        devices: devices to evaluate blankets on; the first holds the sampler state (default:
            every visible CUDA device, else the CPU).
        progress: called as ``progress(step, steps)`` after each sampler step.

    Returns:
        The trimmed :class:`Trajectory` with a small record: seconds, device, host,
        denoiser and blanket evaluations, the blanket batch used, padded size, number of
        blankets, finite, mean, std.
    """
    (trajectory,) = generate_trajectories(
        model,
        trajectory_size,
        [start],
        [seed],
        overlap=overlap,
        sampler=sampler,
        sampler_config=sampler_config,
        steps=steps,
        fold=fold,
        precision=precision,
        blanket_batch=blanket_batch,
        devices=devices,
        progress=progress,
    )
    return trajectory


def generate_trajectories(
    model: SamplingModel,
    trajectory_size: int,
    starts: Sequence[datetime],
    seeds: Sequence[int],
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
) -> list[Trajectory]:
    r"""Sample several trajectories of one size at once, as one batch ``(B, T_pad, *S)``.

    Member ``b`` starts at ``starts[b]`` and draws all its noise from its own generator, seeded
    by ``seeds[b]``: what it is batched with changes its trajectory only by the rounding of
    batched arithmetic (bit for bit the same in the same batch layout). Every backbone call
    holds the blankets of all members, which keeps a GPU busy. Arguments as
    :func:`generate_trajectory`; one :class:`Trajectory` per member, in order, each record with
    its own statistics and the batch's seconds and evaluations.
    """
    if len(starts) != len(seeds) or not starts:
        raise ValueError(
            f"{len(starts)} starts and {len(seeds)} seeds: give one of each per member"
        )
    began = time.perf_counter()
    plan = BlanketPlan(trajectory_size, model.blanket_size, overlap)
    precision = resolve_precision(precision, model.trained_precision)
    steps = model.default_steps if steps is None else steps
    devices = resolve_devices(devices)
    device = devices[0]

    denoiser: BlanketFn = model.denoiser(precision).to(device)
    blanket_denoiser = BlanketDenoiser(
        denoiser, plan, fold=fold, batch_size=blanket_batch, devices=devices
    )
    dates = torch.stack([timestamps(start, plan.padded_size, model.dt_hours) for start in starts])
    dates = dates.to(device)  # (B, T_pad, 4)

    def trajectory_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return blanket_denoiser(x, sigma, dates)

    run = make_sampler(
        sampler, trajectory_denoiser, model.schedule, steps, **(sampler_config or {})
    )
    generators = [make_generator(seed) for seed in seeds]
    z = draw_noise((len(seeds), plan.padded_size, *model.state_shape), generators)
    x = run((run.sigma(0) * z).to(device), generator=generators, progress=progress)

    latents = plan.trim(x).float().cpu()
    stamps = plan.trim(dates, dim=1).cpu()
    shared = {
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
        "batch": len(seeds),
    }
    trajectories = []
    for latent, stamp in zip(latents, stamps, strict=True):
        finite = bool(torch.isfinite(latent).all())
        record = shared | {
            "finite": finite,
            "mean": float(latent.mean()) if finite else float("nan"),
            "std": float(latent.std()) if finite else float("nan"),
        }
        trajectories.append(Trajectory(latent.contiguous(), stamp.contiguous(), record))
    return trajectories
