"""``priorflow plan CONFIG [--set key=value ...]``: the dry run of a run config.

Prints the sizes, padded lengths, blankets, jobs and resources of the run; writes nothing and
submits nothing. The archive's dates are checked when the archive exists. For the local backend, the GPUs per job
are capped by the GPUs this machine has (0 on a CPU-only machine), as ``priorflow run`` does.
"""

from __future__ import annotations

from pathlib import Path

import typer


def plan(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        help="Override a config key: --set diffusion.num_steps=32 (repeatable; YAML values).",
    ),
    run_id: str | None = typer.Option(
        None, "--run-id", help="Name of the run (default: from config)."
    ),
) -> None:
    """Show what a run config would do: sizes, padded lengths, blankets, jobs, resources."""
    from priorflow.config import load_config
    from priorflow.models.loading import read_card
    from priorflow.plan import format_plan, make_plan, resolve_archive_path

    items = list(overrides) + ([f"run_id={run_id}"] if run_id else [])
    # Prefect blocks named in the config are read from the Prefect server (imported only then).
    from priorflow.run.prepare import block_values

    run_config = load_config(config, items, resolve_block=block_values)
    card = read_card(run_config.model_path)
    archive = None
    archive_path = resolve_archive_path(run_config, card)
    note = "none (dates not checked)"
    if archive_path is not None:
        if Path(archive_path).exists():
            from priorflow.data.archive import open_archive

            archive = open_archive(archive_path)
            note = f"{archive_path} (dates checked)"
        else:
            note = f"{archive_path} (not built yet; dates not checked)"
    gpus_available = None
    if run_config.hardware.backend == "local":  # as the run will: this machine's GPUs
        import torch

        gpus_available = torch.cuda.device_count()
    run_plan = make_plan(run_config, card, archive, gpus_available=gpus_available)
    typer.echo(format_plan(run_plan))
    typer.echo(f"archive    {note}")
    if not run_config.run_dir.exists():
        typer.echo("store      not created (plan writes nothing)")
    else:
        typer.echo(f"store      {run_config.run_dir} exists: running it resumes that run")


def register(app: typer.Typer) -> None:
    """Add ``priorflow plan`` to the app."""
    app.command("plan")(plan)
