"""``priorflow check RUN [--set check.key=value ...] [--archive PATH]``: the prior check of a run.

Evaluates the finished run against its archive, writes a new folder ``RUN/check/<UTC time>/``
(metrics store, report, plots; ``RUN/check/latest`` points at it, earlier checks are kept) and
prints the verdict, the reasons, the key numbers and where the check is. Exit status: 0 when the check
passes, 1 when it fails, 2 on a user error (no run, unfinished run, bad setting, no archive).
"""

from __future__ import annotations

from pathlib import Path

import typer


def check(
    run: Path = typer.Argument(
        ..., help="Run directory (<output_dir>/<run_id>, holds prior.zarr)."
    ),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        help="Override a check setting: --set check.max_bias=0.3 (repeatable; YAML values).",
    ),
    archive: Path | None = typer.Option(
        None,
        "--archive",
        help="Latent archive (default: the run's config, else the model card's).",
    ),
) -> None:
    """Check a finished run's priors against the archive, climatology and persistence."""
    from priorflow.evaluation.check import load_check_config, run_check
    from priorflow.evaluation.report import format_result

    config = load_check_config(run, overrides)
    result = run_check(
        run,
        config,
        archive=archive,
        progress=lambda line: typer.echo(line, err=True),
    )
    typer.echo(format_result(result))
    if not result.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``priorflow check`` to the app."""
    app.command("check")(check)
