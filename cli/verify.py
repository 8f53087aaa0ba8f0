"""``priorflow verify RUN [--size 72h ...]``: is a run's data what its members wrote?

Reads every member's chunk once and checks it against the sha256 its done mark holds. Prints
how many members were checked and names each member that cannot be trusted, with why. Exit
status: 0 all members verified, 1 some are damaged (named), 2 not a run.
"""

from __future__ import annotations

from pathlib import Path

import typer


def verify(
    run: Path = typer.Argument(..., help="Run directory (<output_dir>/<run_id>)."),
    sizes: list[str] = typer.Option(
        [], "--size", help="Only this size: 72h (span) or 72 (states); repeatable."
    ),
) -> None:
    """Check every member of a run against its done mark (data changed since it was written?)."""
    from priorflow.store.integrity import verify_run

    checked, problems = verify_run(run, sizes or None)
    for problem in problems:
        typer.echo(f"{problem.group} {problem.name}: {problem.reason}")
    if problems:
        typer.echo(
            f"damaged: {len(problems)} of {checked} members — run it again with the same run_id"
            " to regenerate them"
        )
        raise typer.Exit(1)
    typer.echo(f"verified: {checked} members match their done marks")


def register(app: typer.Typer) -> None:
    """Add ``priorflow verify`` to the app."""
    app.command("verify")(verify)
