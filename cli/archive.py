"""``priorflow archive``: write the synthetic latent archive, and describe an archive.

priorflow archive synth --start 2000-01-01 --end 2001-12-31 --out data/latent.zarr [--seed N]
priorflow archive info data/latent.zarr
"""

from __future__ import annotations

from pathlib import Path

import typer

archive_app = typer.Typer(
    name="archive",
    help="Latent archives: write the synthetic one, describe any.",
    no_args_is_help=True,
)


@archive_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Store to create (a zarr directory)."),
    start: str = typer.Option("2000-01-01", help="First valid time, 'YYYY-MM-DD[ Hh]'."),
    end: str = typer.Option(
        "2001-12-31", help="Last day (a bare date includes all its hours), 'YYYY-MM-DD[ Hh]'."
    ),
    seed: int = typer.Option(0, help="Seed of the trajectory's noise."),
    world_seed: int = typer.Option(0, help="Seed of the world (amplitudes, correlations)."),
    dt_hours: int = typer.Option(1, help="Hours between states (divides 24)."),
    shape: str = typer.Option("4,16,32", help="State shape C,H,W."),
    overwrite: bool = typer.Option(False, help="Replace an existing store at --out."),
    max_gib: float = typer.Option(2.0, help="Refuse an archive larger than this (GiB)."),
) -> None:
    """Write the synthetic world's states from START to END to a new zarr archive."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from priorflow.core.dates import parse_start_date
    from priorflow.data.synthetic import SyntheticWorld
    from priorflow.data.synthetic_archive import parse_end, write_synthetic_archive
    from priorflow.errors import ArchiveError, ConfigError

    first = parse_start_date(start, field="--start")
    last = parse_end(end, dt_hours, field="--end")
    try:
        dims = tuple(int(v) for v in shape.split(","))
    except ValueError:
        raise ConfigError(f"--shape: {shape!r} is not C,H,W (e.g. 4,16,32)") from None
    if out.exists() and not overwrite:
        raise ArchiveError(f"--out: {out} already exists; remove it or pass --overwrite")
    world = SyntheticWorld(dims, seed=world_seed)
    began = time.perf_counter()
    with Progress(
        TextColumn("[bold]writing[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} states"),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task(str(out), total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        path = write_synthetic_archive(
            out,
            first,
            last,
            world=world,
            dt_hours=dt_hours,
            progress=progress,
            seed=seed,
            overwrite=overwrite,
            max_bytes=int(max_gib * 2**30),
        )
    typer.echo(f"wrote {path} in {time.perf_counter() - began:.1f} s")
    _print_info(path)


@archive_app.command("info")
def info(path: Path = typer.Argument(..., help="The archive (zarr store).")) -> None:
    """Print an archive's time range, state shape and statistics."""
    _print_info(path)


def _print_info(path: Path) -> None:
    from priorflow.data.archive import open_archive

    archive = open_archive(path)
    typer.echo(f"archive     {archive.path}")
    typer.echo(f"range       {archive.range_label}")
    typer.echo(f"states      {len(archive)}")
    typer.echo(f"state       {dict(zip(archive.state_dims, archive.state_shape, strict=True))}")
    stats = archive.stats
    for key in ("mean", "std"):
        if key in stats:
            values = ", ".join(f"{v:+.3f}" for v in stats[key])
            typer.echo(f"{key:<12}[{values}] (per channel)")
    world = archive.attrs.get("world")
    if world:
        typer.echo(f"world       {world.get('kind')} {world.get('kwargs')}")


def register(app: typer.Typer) -> None:
    """Add the ``archive`` command group to the ``priorflow`` app."""
    app.add_typer(archive_app, name="archive")
