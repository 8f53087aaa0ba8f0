"""``priorflow train``: train the reference backbone on a latent archive.

priorflow train --archive data/archive.zarr --out models/reference [--steps N --batch-size B ...]

Rerunning the same command on the same ``--out`` continues from the saved step.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""
    app.command("train")(train)


def train(
    archive: Path = typer.Option(
        ..., "--archive", help="Latent archive (zarr store) to train on."
    ),
    out: Path = typer.Option(..., "--out", help="Model directory to write (or resume)."),
    steps: int = typer.Option(3000, help="Total optimiser steps."),
    batch_size: int = typer.Option(16, help="Blankets per step."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, warm-up then cosine)."),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    warmup: int = typer.Option(200, help="Warm-up steps."),
    ema_decay: float = typer.Option(0.999, help="Decay of the weights' moving average."),
    seed: int = typer.Option(0, help="Seed of the initialisation, batches and noise."),
    blanket_size: int = typer.Option(8, help="K: states per blanket."),
    dt_hours: int = typer.Option(None, help="Hours between states (default: the archive's)."),
    schedule: str = typer.Option(
        "rectified", help="Noise schedule: rectified, loglinear, loglogit."
    ),
    sigma_min: float = typer.Option(1e-3, help="Smallest noise level."),
    sigma_max: float = typer.Option(1e3, help="Largest noise level."),
    denoising_steps: int = typer.Option(64, help="Default sampler steps written to the card."),
    channels: str = typer.Option(
        "16,32,64", help="Backbone widths per resolution, comma-separated."
    ),
    blocks: int = typer.Option(1, help="Residual blocks per resolution."),
    embedding: int = typer.Option(64, help="Width of the noise + date embedding."),
    padding: str = typer.Option("zeros", help="Spatial padding: zeros or circular."),
    upsampling: str = typer.Option(
        "nearest", help="How the decoder doubles the resolution: nearest or bilinear."
    ),
    spectral_skip: bool = typer.Option(
        False,
        help="Add to the backbone's output the blanket's Wiener estimate under a Gaussian prior"
        " fitted on the training states (climatology; per spatial mode the channels' covariance"
        " and lag correlation); the network learns the rest.",
    ),
    temporal_kernel: int = typer.Option(
        3, help="States seen by each temporal convolution (odd; K - 1 or more: the whole blanket)."
    ),
    position_rank: int = typer.Option(
        8, help="Learned maps of the date-dependent position field."
    ),
    val_every_days: int = typer.Option(10, help="Hold out every N-th day for validation."),
    val_blankets: int = typer.Option(256, help="Blankets in the validation loss."),
    eval_every: int = typer.Option(250, help="Validate and checkpoint every N steps."),
    precision: str = typer.Option(
        "float32", help="Training precision: float32, float16, bfloat16."
    ),
    device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
    threads: int = typer.Option(None, help="Torch CPU threads (default: torch's choice)."),
) -> None:
    """Train the reference backbone on blankets of a latent archive; writes card.yaml,
    model_best.pt, model_last.pt and training_state.pt (rerun to resume)."""
    import torch
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from priorflow.errors import ConfigError
    from priorflow.models.training import TrainConfig, TrainingData, TrainProgress
    from priorflow.models.training import train as run_training

    try:
        widths = [int(c) for c in channels.split(",")]
    except ValueError:
        raise ConfigError(f"--channels: {channels!r} is not comma-separated integers") from None
    if threads:
        torch.set_num_threads(threads)
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        ema_decay=ema_decay,
        seed=seed,
        blanket_size=blanket_size,
        dt_hours=dt_hours,
        schedule=schedule,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        denoising_steps=denoising_steps,
        backbone={
            "channels": widths,
            "blocks": blocks,
            "embedding": embedding,
            "padding": padding,
            "temporal_kernel": temporal_kernel,
            "upsampling": upsampling,
            "spectral_skip": spectral_skip,
            "position_rank": position_rank,
        },
        val_every_days=val_every_days,
        val_blankets=val_blankets,
        eval_every=eval_every,
        precision=precision,
        device=device,
    )
    config.check()
    data = TrainingData.from_archive(archive)
    command = "priorflow " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    with Progress(
        TextColumn("[bold]training[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]} val {task.fields[val]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task(str(out), total=steps, loss="-", val="-")

        def progress(info: TrainProgress) -> None:
            val = "-" if info.val_loss is None else f"{info.val_loss:.4f}"
            bar.update(task, completed=info.step, loss=f"{info.loss_avg:.4f}", val=val)

        result = run_training(data, out, config, progress=progress, command=command)
    if result.resumed_from:
        typer.echo(f"resumed from step {result.resumed_from}")
    best = "-" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
    typer.echo(
        f"trained {out} to step {result.step} in {result.seconds:.0f} s; best validation loss"
        f" {best} at step {result.best_step}"
    )
