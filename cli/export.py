"""``priorflow export RUN --format pt|netcdf [--size 72h] [--out DIR]``: a finished run in other
layouts.

``pt`` writes ``<out>/<group>/trajectories.pt`` ``(dates, members, T0, *state)`` and
``timestamps.pt`` ``(dates, members, T0, 4)`` (the original script's layout); ``netcdf`` writes
``<out>/<group>/prior.nc``, one CF netCDF file per size. Every size of the run, or one with
--size; only verified members, nothing half-written.
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run: Path = typer.Argument(..., help="Run directory: <output_dir>/<run_id>."),
    fmt: str = typer.Option(
        ...,
        "--format",
        help="Export format: pt (torch tensors) or netcdf (one CF file per size).",
    ),
    size: str | None = typer.Option(
        None, "--size", help="Only this size: 72h (span) or 72 (states)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: RUN/export)."),
) -> None:
    """Export a finished run's trajectories: torch .pt files or netCDF, verified members only."""
    from priorflow.store.export import check_format, export_pt
    from priorflow.store.export_netcdf import export_netcdf

    writer = {"pt": export_pt, "netcdf": export_netcdf}[check_format(fmt)]
    for path in writer(run, out=out, size=size):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``priorflow export`` to the app."""
    app.command("export")(export)
