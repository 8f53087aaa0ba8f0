"""``priorflow model info PATH``: what a model is, checked, without loading its weights.

Works on a priorflow model directory and on an Appa lap folder alike: format, blanket size K,
time step, schedule, default steps, training precision, state shape, the archive with its range
and standardization, and each checkpoint's sha256. Each checkpoint is checked as a run would
check it (the backbone built on the meta device, the file memory-mapped, weights only); a
problem is one line and exit status 2, after what could be read is printed.
"""

from __future__ import annotations

from pathlib import Path

import typer

model_app = typer.Typer(
    name="model",
    help="Models: describe and check a priorflow model directory or an Appa lap folder.",
    no_args_is_help=True,
)


@model_app.command("info")
def info(
    path: Path = typer.Argument(..., help="A priorflow model directory or an Appa lap folder."),
) -> None:
    """Print a model's format, K, dt, schedule, steps, precision, state, archive, checkpoints."""
    from priorflow.data.archive import open_archive
    from priorflow.errors import PriorflowError
    from priorflow.models.appa import card_standardizes
    from priorflow.models.formats import open_model_source
    from priorflow.models.loading import check_model
    from priorflow.plan import card_archive_path

    source = open_model_source(path)
    card = source.card
    schedule = card.schedule
    typer.echo(f"model       {source.path}")
    typer.echo(f"format      {source.format}")
    typer.echo(f"blanket     K = {card.blanket_size} states, dt = {card.dt_hours} h")
    typer.echo(
        f"schedule    {schedule.name}, sigma {schedule.sigma_min:g} to {schedule.sigma_max:g}"
    )
    typer.echo(f"steps       {card.denoising_steps} (default)")
    typer.echo(f"precision   {card.precision} (training)")
    typer.echo(f"state       {tuple(card.state_shape)}")
    archive_path = card_archive_path(str(source.path), card.archive)
    if archive_path is None:
        typer.echo("archive     none named")
    elif "://" not in archive_path and not Path(archive_path).exists():
        typer.echo(f"archive     {archive_path} (missing)")
    problems = []
    archive = None
    if archive_path is not None and ("://" in archive_path or Path(archive_path).exists()):
        if "://" not in archive_path:
            archive_path = str(Path(archive_path).resolve())
        try:
            archive = open_archive(archive_path, standardize=card_standardizes(card.metadata))
        except PriorflowError as error:
            typer.echo(f"archive     {archive_path} (not readable)")
            problems.append(str(error))
    if archive is not None:
        typer.echo(f"archive     {archive.path}")
        typer.echo(f"range       {archive.range_label} ({len(archive)} states)")
        if archive.standardization:
            record = archive.standardization
            typer.echo(
                f"standardize (x - mean) / std with {record['stats_file']}"
                f" (sha256 {record['stats_sha256'][:16]}...)"
            )
    for target, name in source.checkpoints.items():
        if not (source.path / name).is_file():
            typer.echo(f"checkpoint  {target}: {name} (missing)")
            continue
        try:
            checked = check_model(source.path, target)
        except PriorflowError as error:
            typer.echo(f"checkpoint  {target}: {name} (check failed)")
            problems.append(str(error))
            continue
        typer.echo(f"checkpoint  {target}: {name} sha256 {checked.checkpoint_sha256} (fits)")
    if problems:
        raise PriorflowError(problems[0])


def register(app: typer.Typer) -> None:
    """Add the ``model`` command group to the ``priorflow`` app."""
    app.add_typer(model_app, name="model")
