"""What a trained model directory records: its card and the training metadata in it."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from priorflow.models.card import BackboneSpec, ModelCard, ScheduleSpec
from priorflow.models.training_data import Split, TrainingData

if TYPE_CHECKING:
    from priorflow.models.training import TrainConfig


def archive_from(model_dir: Path, source: str | None) -> str | None:
    """The training archive as the card records it: relative to the model directory.

    Plans read a relative card ``archive`` against the model directory, so a model directory
    moved together with its archive keeps pointing at it.
    """
    if not source or "://" in source or not Path(source).expanduser().exists():
        return source  # a label (in-memory data) or a URL: kept as it is
    return os.path.relpath(Path(source).expanduser().resolve(), Path(model_dir).resolve())


def trained_card(
    config: TrainConfig,
    shape: tuple[int, ...],
    data: TrainingData,
    metadata: dict,
    model_dir: Path,
) -> ModelCard:
    return ModelCard(
        backbone=BackboneSpec(target=config.target, kwargs=dict(config.backbone)),
        blanket_size=config.blanket_size,
        dt_hours=config.dt_hours or data.dt_hours,
        state_shape=shape,
        schedule=ScheduleSpec(
            name=config.schedule, sigma_min=config.sigma_min, sigma_max=config.sigma_max
        ),
        denoising_steps=config.denoising_steps,
        precision=config.precision,
        archive=archive_from(model_dir, data.source),
        metadata=metadata,
    )


def training_metadata(
    config: TrainConfig,
    data: TrainingData,
    split: Split,
    step: int,
    loss: float | None,
    val_loss: float | None,
    best_val: float | None,
    best_step: int | None,
) -> dict[str, Any]:
    from priorflow import __version__

    return {
        "trained_steps": step,
        "train_loss": rounded(loss),
        "val_loss": rounded(val_loss),
        "best_val_loss": rounded(best_val),
        "best_step": best_step,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "warmup": config.warmup,
        "ema_decay": config.ema_decay,
        "val_every_days": config.val_every_days,
        "train_blankets": len(split.train),
        "val_blankets": len(split.val),
        "archive_range": [str(data.times[0])[:13], str(data.times[-1])[:13]],
        "archive_world": data.world,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "priorflow": __version__,
        "torch": torch.__version__,
    }


def rounded(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.5g}")
