r"""Training a backbone on blankets of a latent archive with the denoising loss.

A blanket is ``K`` consecutive states ``x`` (shape ``(K, *S)``, ``dt_hours`` apart) with their
dates. For each blanket of a batch a diffusion time :math:`t \sim U[0, 1]` is drawn (stratified
over the batch: :math:`t_i = (i + u_i)/B`), :math:`\sigma = \sigma(t)` from the schedule and

.. math::
    \mathcal{L} = \lambda(\sigma)\,\frac{1}{|x|}\,\|d(x + \sigma z, \sigma) - x\|^2,
    \qquad \lambda(\sigma) = \frac{1}{\sigma^2} + 1,

with :math:`d` the preconditioned denoiser (:mod:`priorflow.core.denoiser`), averaged over the batch.
With EDM preconditioning :math:`\lambda(\sigma) c_{out}^2 = 1`: every noise level weighs the
same on the backbone's output.

Optimiser AdamW with linear warm-up and cosine decay; an exponential moving average (EMA) of
the weights is what is evaluated and saved. Whole days are held out for validation (every
``val_every_days``-th day); the validation loss uses fixed blankets, times and noise so that
successive values compare. The model directory receives ``model_best.pt`` (EMA weights at the
best validation loss), ``model_last.pt`` (EMA weights at the last checkpoint), ``card.yaml``
and ``training_state.pt`` (weights, EMA, optimiser, step and random state, written atomically):
rerunning the same command continues from the saved step and ends where an uninterrupted run
would have.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from priorflow.atomic import write_file
from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.core.precision import PRECISIONS
from priorflow.core.schedules import make_schedule, schedule_class
from priorflow.errors import ConfigError, ModelError
from priorflow.models.card import CHECKPOINTS, write_card
from priorflow.models.denoising_loss import ValidationLoss, denoising_loss, stratified_times
from priorflow.models.loading import build_backbone
from priorflow.models.training_card import rounded, trained_card, training_metadata
from priorflow.models.training_data import Batches, TrainingData, blanket_split

STATE_NAME = "training_state.pt"
REFERENCE_TARGET = "priorflow.models.reference:ReferenceBackbone"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (all but ``steps`` must match when a run is resumed)."""

    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    blanket_size: int = 8
    dt_hours: int | None = None
    schedule: str = "rectified"
    sigma_min: float = 1e-3
    sigma_max: float = 1e3
    denoising_steps: int = 64
    target: str = REFERENCE_TARGET
    backbone: dict[str, Any] = field(default_factory=dict)
    val_every_days: int = 10
    val_blankets: int = 256
    eval_every: int = 250
    precision: str = "float32"
    device: str = "cpu"

    def check(self) -> None:
        """Raise :class:`ConfigError` (one line, naming the field) for an unusable setting."""
        positive = (
            "steps",
            "batch_size",
            "blanket_size",
            "denoising_steps",
            "val_every_days",
            "val_blankets",
            "eval_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: {getattr(self, name)} must be at least 1")
        if self.val_every_days < 2:
            raise ConfigError(
                f"val_every_days: {self.val_every_days} would hold out every day; use 2 or more"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr: {self.lr} must be positive")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay: {self.ema_decay} must lie in [0, 1)")
        if self.dt_hours is not None and self.dt_hours < 1:
            raise ConfigError(f"dt_hours: {self.dt_hours} must be at least 1")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision: {self.precision!r} is not a precision; use float32, float16 or"
                " bfloat16"
            )
        try:
            schedule_class(self.schedule)
        except ValueError as error:
            raise ConfigError(f"schedule: {error}") from None
        try:
            make_schedule(self.schedule, self.sigma_min, self.sigma_max)
        except ValueError as error:
            raise ConfigError(f"sigma_min, sigma_max: {error}") from None

    def resumable_dict(self) -> dict[str, Any]:
        """The settings that a resumed run must share (all but ``steps`` and ``device``)."""
        data = asdict(self)
        data.pop("steps")
        data.pop("device")
        return json.loads(json.dumps(data))


@dataclass
class TrainProgress:
    """What the progress callback receives after each step."""

    step: int
    steps: int
    loss: float
    loss_avg: float
    lr: float
    val_loss: float | None
    best_val_loss: float | None
    seconds: float


@dataclass
class TrainResult:
    """Where the model went and how training ended."""

    out: Path
    step: int
    best_val_loss: float | None
    best_step: int | None
    last_val_loss: float | None
    resumed_from: int
    seconds: float


def _lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 5 % of ``lr`` at ``steps``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _atomic_save(obj: Any, path: Path) -> None:
    write_file(path, lambda handle: torch.save(obj, handle))


def train(
    data: TrainingData,
    out: str | Path,
    config: TrainConfig | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train ``config.target`` on blankets of ``data`` and write the model directory ``out``.

    If ``out`` holds a ``training_state.pt`` of the same settings, training continues from
    its step up to ``config.steps`` (a different setting is a :class:`ConfigError`).

    Arguments:
        data: the states, times and spacing to train on.
        out: model directory to write (created).
        config: training settings (defaults: :class:`TrainConfig`).
        progress: called with a :class:`TrainProgress` after every step.
        command: the command line, recorded in the card's metadata.

    Returns:
        A :class:`TrainResult`.
    """
    config = config or TrainConfig()
    config.check()
    out = Path(out)
    device = torch.device(config.device)
    dt_hours = config.dt_hours or data.dt_hours
    shape = data.state_shape
    split = blanket_split(
        data.times, data.dt_hours, config.blanket_size, dt_hours, config.val_every_days
    )
    schedule = make_schedule(config.schedule, config.sigma_min, config.sigma_max)
    card = trained_card(config, shape, data, {}, out)
    torch.manual_seed(config.seed)  # parameter initialisation
    try:
        backbone = build_backbone(card).to(device)
    except ModelError as error:
        raise ConfigError(str(error)) from None
    ema = _copy(backbone)
    optimizer = torch.optim.AdamW(
        backbone.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: list[list[float | None]] = []
    step, best_val, best_step, seconds_before, initial_val = 0, None, None, 0.0, None

    state_file = out / STATE_NAME
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        _check_resumable(json.loads(state["config"]), config.resumable_dict(), state_file)
        backbone.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, best_val, best_step = state["step"], state["best_val"], state["best_step"]
        history = json.loads(state["history"])
        seconds_before, initial_val = state["seconds"], state["initial_val"]
    resumed_from = step
    out.mkdir(parents=True, exist_ok=True)

    batches = Batches(data, config.blanket_size, split.stride, device)
    validate = ValidationLoss(split, batches, config, schedule)
    denoiser = PreconditionedDenoiser(backbone, config.precision)
    ema_denoiser = PreconditionedDenoiser(ema, config.precision).eval()
    began = time.perf_counter()
    loss_avg, val_loss = None, None

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - began

    def checkpoint() -> None:
        nonlocal best_val, best_step, val_loss
        val_loss = validate(ema_denoiser)
        history.append([step, loss_avg, val_loss])
        weights = {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()}
        if best_val is None or val_loss < best_val:
            best_val, best_step = val_loss, step
            _atomic_save(weights, out / CHECKPOINTS["best"])
        _atomic_save(weights, out / CHECKPOINTS["last"])
        metadata = training_metadata(
            config, data, split, step, loss_avg, val_loss, best_val, best_step
        )
        metadata.update(
            command=command,
            seconds=round(elapsed(), 1),
            initial_val_loss=initial_val,
            history=[[s, rounded(a), rounded(v)] for s, a, v in history],
        )
        write_card(out, trained_card(config, shape, data, metadata, out))
        _atomic_save(
            {
                "step": step,
                "model": backbone.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "best_val": best_val,
                "best_step": best_step,
                "initial_val": initial_val,
                "history": json.dumps(history),
                "seconds": elapsed(),
                "config": json.dumps(config.resumable_dict()),
            },
            state_file,
        )

    if step == 0:
        initial_val = validate(ema_denoiser)
    backbone.train()
    while step < config.steps:
        lr = _lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        pick = torch.randint(len(split.train), (config.batch_size,), generator=generator)
        x, dates = batches(split.train[pick])
        sigma = schedule(stratified_times(config.batch_size, generator)).float().to(device)
        z = torch.randn(x.shape, generator=generator).to(device)
        loss = denoising_loss(denoiser, x, dates, sigma, z).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(backbone.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        _ema_update(ema, backbone, min(config.ema_decay, (1 + step) / (10 + step)))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(
                f"lr: training diverged at step {step} (loss {value}); lower lr (now"
                f" {config.lr:g}) or raise warmup"
            )
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        if step % config.eval_every == 0 or step == config.steps:
            checkpoint()
        if progress is not None:
            progress(
                TrainProgress(
                    step, config.steps, value, loss_avg, lr, val_loss, best_val, elapsed()
                )
            )
    if step == resumed_from and not (out / CHECKPOINTS["last"]).exists():
        checkpoint()
    return TrainResult(out, step, best_val, best_step, val_loss, resumed_from, elapsed())


def _copy(module: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(module)
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def _check_resumable(saved: dict, current: dict, file: Path) -> None:
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise ConfigError(
                f"{key}: {current.get(key)!r} differs from {saved.get(key)!r} of the run saved in"
                f" {file}; rerun with the same settings to resume, or use a new --out"
            )
