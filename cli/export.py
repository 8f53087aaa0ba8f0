"""``priorflow export RUN --format pt [--size 72h] [--out DIR]``: the original script's layout.

Writes ``<out>/<group>/trajectories.pt`` ``(dates, members, T0, *state)`` and ``timestamps.pt``
``(dates, members, T0, 4)`` for every trajectory size of a finished run (or one, with --size).
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run: Path = typer.Argument(..., help="Run directory: <output_dir>/<run_id>."),
    fmt: str = typer.Option(..., "--format", help="Export format: pt (torch tensors)."),
    size: str | None = typer.Option(
        None, "--size", help="Only this size: 72h (span) or 72 (states)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: RUN/export)."),
) -> None:
    """Export a finished run's trajectories and timestamps (original layout, torch .pt files)."""
    from priorflow.store.export import check_format, export_pt

    check_format(fmt)
    for path in export_pt(run, out=out, size=size):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``priorflow export`` to the app."""
    app.command("export")(export)
