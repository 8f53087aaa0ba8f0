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

import numpy as np
import torch
from torch import nn

from priorflow.atomic import write_file
from priorflow.core.dates import times_to_fields
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
    run = _Training(data, Path(out), config, command)
    resumed_from = run.resume()
    run.out.mkdir(parents=True, exist_ok=True)
    run.start()
    while run.step < config.steps:
        lr, value = run.optimise()
        if run.step % config.eval_every == 0 or run.step == config.steps:
            run.checkpoint()
        if progress is not None:
            progress(
                TrainProgress(
                    run.step,
                    config.steps,
                    value,
                    run.loss_avg,
                    lr,
                    run.val_loss,
                    run.best_val,
                    run.elapsed(),
                )
            )
    if run.step == resumed_from and not (run.out / CHECKPOINTS["last"]).exists():
        run.checkpoint()
    return TrainResult(
        run.out, run.step, run.best_val, run.best_step, run.val_loss, resumed_from, run.elapsed()
    )


class _Training:
    """One training run's state: the backbone and its EMA, the optimiser, the data, the counters.

    The steps of :func:`train`: :meth:`resume` (from ``training_state.pt``), :meth:`start` (the
    initial validation loss), :meth:`optimise` (one optimiser step), :meth:`checkpoint`
    (validation, weights, card, state; all written atomically).
    """

    def __init__(self, data: TrainingData, out: Path, config: TrainConfig, command: str | None):
        self.data, self.out, self.config, self.command = data, out, config, command
        self.device = torch.device(config.device)
        self.shape = data.state_shape
        dt_hours = config.dt_hours or data.dt_hours
        self.split = blanket_split(
            data.times, data.dt_hours, config.blanket_size, dt_hours, config.val_every_days
        )
        self.schedule = make_schedule(config.schedule, config.sigma_min, config.sigma_max)
        card = trained_card(config, self.shape, data, {}, out)
        torch.manual_seed(config.seed)  # parameter initialisation
        try:
            self.backbone = build_backbone(card).to(self.device)
        except ModelError as error:
            raise ConfigError(str(error)) from None
        self._fit_backbone_to_training_states(config.blanket_size)
        self.ema = _copy(self.backbone)
        self.optimizer = torch.optim.AdamW(
            self.backbone.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history: list[list[float | None]] = []
        self.step, self.best_val, self.best_step = 0, None, None
        self.seconds_before, self.initial_val = 0.0, None
        self.loss_avg: float | None = None
        self.val_loss: float | None = None
        self.began = time.perf_counter()

    def _fit_backbone_to_training_states(self, blanket_size: int) -> None:
        """A backbone with ``fit_states`` (e.g. the reference one's spectral skip) sees the
        states of the training blankets (never a validation day's) and their dates before its
        first step, with the pairs of them one blanket step apart; a resumed run loads what the
        first one fitted with the rest of its state, so it does not fit again."""
        fit = getattr(self.backbone, "fit_states", None)
        if not callable(fit) or self.state_file.exists():
            return
        stride = self.split.stride
        offsets = torch.arange(blanket_size) * stride
        index = torch.unique((self.split.train[:, None] + offsets).reshape(-1))
        # positions a, b in index with index[b] = index[a] + stride
        after = torch.searchsorted(index, index + stride).clamp(max=len(index) - 1)
        follows = index[after] == index + stride
        pairs = torch.stack([torch.nonzero(follows)[:, 0], after[follows]], dim=1)
        dates = times_to_fields(np.asarray(self.data.times)[index.numpy()])
        fit(torch.from_numpy(np.asarray(self.data.states)[index.numpy()]), dates, pairs)

    @property
    def state_file(self) -> Path:
        return self.out / STATE_NAME

    def elapsed(self) -> float:
        """Seconds of training so far, earlier runs included."""
        return self.seconds_before + time.perf_counter() - self.began

    def resume(self) -> int:
        """Continue from ``training_state.pt`` when it exists (same settings); the step."""
        if self.state_file.exists():
            state = torch.load(self.state_file, map_location="cpu", weights_only=True)
            _check_resumable(
                json.loads(state["config"]), self.config.resumable_dict(), self.state_file
            )
            self.backbone.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            self.step, self.best_val = state["step"], state["best_val"]
            self.best_step = state["best_step"]
            self.history = json.loads(state["history"])
            self.seconds_before, self.initial_val = state["seconds"], state["initial_val"]
        return self.step

    def start(self) -> None:
        """The batches, the fixed validation loss and the denoisers; the initial loss."""
        config = self.config
        self.batches = Batches(self.data, config.blanket_size, self.split.stride, self.device)
        self.validate = ValidationLoss(self.split, self.batches, config, self.schedule)
        self.denoiser = PreconditionedDenoiser(self.backbone, config.precision)
        self.ema_denoiser = PreconditionedDenoiser(self.ema, config.precision).eval()
        self.began = time.perf_counter()
        if self.step == 0:
            self.initial_val = self.validate(self.ema_denoiser)
        self.backbone.train()

    def optimise(self) -> tuple[float, float]:
        """One optimiser step on a random batch; ``(learning rate, loss)``."""
        config, generator = self.config, self.generator
        lr = _lr_at(self.step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        pick = torch.randint(len(self.split.train), (config.batch_size,), generator=generator)
        x, dates = self.batches(self.split.train[pick])
        t = stratified_times(config.batch_size, generator)
        sigma = self.schedule(t).float().to(self.device)
        z = torch.randn(x.shape, generator=generator).to(self.device)
        loss = denoising_loss(self.denoiser, x, dates, sigma, z).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.backbone.parameters(), config.grad_clip)
        self.optimizer.step()
        self.step += 1
        _ema_update(
            self.ema, self.backbone, min(config.ema_decay, (1 + self.step) / (10 + self.step))
        )
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(
                f"lr: training diverged at step {self.step} (loss {value}); lower lr (now"
                f" {config.lr:g}) or raise warmup"
            )
        self.loss_avg = value if self.loss_avg is None else 0.98 * self.loss_avg + 0.02 * value
        return lr, value

    def checkpoint(self) -> None:
        """Validate the EMA weights; write the best and last checkpoints, the card, the state."""
        config, out = self.config, self.out
        self.val_loss = self.validate(self.ema_denoiser)
        self.history.append([self.step, self.loss_avg, self.val_loss])
        weights = {k: v.detach().cpu().clone() for k, v in self.ema.state_dict().items()}
        if self.best_val is None or self.val_loss < self.best_val:
            self.best_val, self.best_step = self.val_loss, self.step
            _atomic_save(weights, out / CHECKPOINTS["best"])
        _atomic_save(weights, out / CHECKPOINTS["last"])
        metadata = training_metadata(
            config,
            self.data,
            self.split,
            self.step,
            self.loss_avg,
            self.val_loss,
            self.best_val,
            self.best_step,
        )
        metadata.update(
            command=self.command,
            seconds=round(self.elapsed(), 1),
            initial_val_loss=self.initial_val,
            history=[[s, rounded(a), rounded(v)] for s, a, v in self.history],
        )
        write_card(out, trained_card(config, self.shape, self.data, metadata, out))
        _atomic_save(
            {
                "step": self.step,
                "model": self.backbone.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "best_val": self.best_val,
                "best_step": self.best_step,
                "initial_val": self.initial_val,
                "history": json.dumps(self.history),
                "seconds": self.elapsed(),
                "config": json.dumps(config.resumable_dict()),
            },
            self.state_file,
        )


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
