"""``priorflow plan CONFIG [--set key=value ...]``: the dry run of a run config.

Prints the sizes, padded lengths, blankets, jobs and resources of the run; writes nothing and
submits nothing. The archive's dates are checked when the archive exists. For the local backend, the GPUs per job
are capped by the GPUs this machine has (0 on a CPU-only machine), as ``priorflow run`` does.
"""

from __future__ import annotations

import typer

from cli.options import ConfigArgument, RunIdOption, SetOption


def plan(
    config: ConfigArgument,
    overrides: SetOption = [],  # noqa: B006  (typer reads the default; it is never mutated)
    run_id: RunIdOption = None,
) -> None:
    """Show what a run config would do: sizes, padded lengths, blankets, jobs, resources."""
    from flows.run_config import load_run_config
    from priorflow.plan import format_plan
    from priorflow.run.prepare import prepare_run

    prepared = prepare_run(load_run_config(config, overrides, run_id), require_archive=False)
    if prepared.archive_path is None:
        note = "none (dates not checked)"
    elif prepared.archive is None:
        note = f"{prepared.archive_path} (not built yet; dates not checked)"
    else:
        note = f"{prepared.archive_path} (dates checked)"
    typer.echo(format_plan(prepared.plan))
    typer.echo(f"archive    {note}")
    if not prepared.run_dir.exists():
        typer.echo("store      not created (plan writes nothing)")
    else:
        typer.echo(f"store      {prepared.run_dir} exists: running it resumes that run")


def register(app: typer.Typer) -> None:
    """Add ``priorflow plan`` to the app."""
    app.command("plan")(plan)
