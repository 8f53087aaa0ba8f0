"""``priorflow plan CONFIG [--set key=value ...]``: the dry run of a run config.

Prints the sizes, padded lengths, blankets, jobs and resources of the run (every walltime with
its duration as SLURM reads it, ``6:00 = 6 min``); on the local backend the workers and torch
threads it would start (:func:`priorflow.run.local.local_layout`); the ``hardware`` keys the
config sets that its backend does not use; and the estimated run time from earlier runs of the
same model (:mod:`priorflow.run.estimate`), with a one-line warning on stderr when a batch job's
walltime is shorter. Writes nothing and submits nothing. The archive's dates are checked when
the archive exists. For the local backend, the GPUs per job are capped by the GPUs this machine
has (0 on a CPU-only machine), as ``priorflow run`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cli.options import ConfigArgument, RunIdOption, SetOption

if TYPE_CHECKING:
    from priorflow.run.prepare import PreparedRun


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
    for line in hardware_lines(prepared):
        typer.echo(line)
    typer.echo(f"archive    {note}")
    if not prepared.run_dir.exists():
        typer.echo("store      not created (plan writes nothing)")
    else:
        typer.echo(f"store      {prepared.run_dir} exists: running it resumes that run")


def hardware_lines(prepared: PreparedRun) -> list[str]:
    """The workers of a local run, the ignored keys and the run-time estimate; warns (stderr)
    when a batch job's walltime is shorter than its estimate."""
    from flows.runners import generation_layout
    from priorflow.config import ignored_keys
    from priorflow.core.devices import cuda_device_count
    from priorflow.run.estimate import estimate_for, estimate_lines, walltime_warning

    config, plan = prepared.config, prepared.plan
    lines = []
    if config.hardware.backend == "local":
        layout = generation_layout(config.hardware, plan.jobs, cuda_device_count())
        lines.append(f"workers    {layout.describe()}")
    for reason, keys in ignored_keys(config.hardware).items():
        lines.append(f"ignored    {', '.join(keys)} (not used with {reason})")
    estimate = estimate_for(plan, config.hardware, config.output_dir)
    lines += estimate_lines(estimate, plan, config.output_dir)
    warning = walltime_warning(estimate, plan, config.hardware)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    return lines


def register(app: typer.Typer) -> None:
    """Add ``priorflow plan`` to the app."""
    app.command("plan")(plan)
