"""The ``train_reference`` flow: training the reference backbone, visible in the Prefect UI.

A thin wrapper of :func:`priorflow.models.training.train`: one task trains (rerunning the flow on the
same ``out`` resumes), reports its progress to a progress artifact and its logs, and the flow
ends with a markdown artifact summarising the model directory.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)


@task(name="train-backbone", task_run_name="train-{out}")
def train_backbone(archive: str, out: str, config: dict[str, Any], log_every: int) -> dict:
    """Train on ``archive`` into ``out``; returns a small record (no tensors)."""
    from priorflow.models.training import TrainConfig, TrainingData, TrainProgress, train

    logger = get_run_logger()
    settings = TrainConfig(**config)
    artifact = create_progress_artifact(
        0.0, key="training-progress", description=f"training {out}"
    )

    def progress(info: TrainProgress) -> None:
        if info.step % log_every == 0 or info.step == info.steps:
            val = "-" if info.val_loss is None else f"{info.val_loss:.4f}"
            logger.info(
                "step %d/%d loss %.4f val %s lr %.2e", info.step, info.steps, info.loss_avg,
                val, info.lr,
            )  # fmt: skip
            update_progress_artifact(artifact, 100.0 * info.step / info.steps)

    command = f"flow train_reference(archive={archive!r}, out={out!r}, config={config!r})"
    result = train(TrainingData.from_archive(archive), out, settings, progress, command)
    return {
        "out": str(result.out),
        "step": result.step,
        "resumed_from": result.resumed_from,
        "best_val_loss": result.best_val_loss,
        "best_step": result.best_step,
        "last_val_loss": result.last_val_loss,
        "seconds": round(result.seconds, 1),
    }


@flow(name="train-reference")
def train_reference(
    archive: str,
    out: str,
    steps: int = 3000,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    blanket_size: int = 8,
    eval_every: int = 250,
    backbone: dict[str, Any] | None = None,
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
    log_every: int = 50,
) -> dict:
    """Train the reference backbone on ``archive`` into the model directory ``out``.

    ``backbone`` holds the backbone's kwargs (e.g. ``{"channels": [16, 32, 64]}``); ``extra``
    any other :class:`~priorflow.models.training.TrainConfig` field. Returns the training record.
    """
    config = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "blanket_size": blanket_size,
        "eval_every": eval_every,
        "backbone": dict(backbone or {}),
        "device": device,
        **(extra or {}),
    }
    record = train_backbone(archive, out, config, log_every)
    rows = "\n".join(f"| {key} | {value} |" for key, value in record.items())
    create_markdown_artifact(
        f"# Trained model `{out}`\n\n| | |\n|---|---|\n{rows}\n",
        key="training-summary",
        description="reference backbone training",
    )
    return record
