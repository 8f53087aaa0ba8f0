"""``priorflow run CONFIG [--set k=v ...] [--run-id ID] [--check] [--keep-server] [--no-build-archive]``.

Runs the ``prior-generation`` flow on a run config, in this process, with a progress bar for the
whole run. In order:

1. Validate everything first: the config (read once, its Prefect blocks resolved once), the
   model card and checkpoint, the plan. A problem is one line ``error: ...`` and exit status 2;
   nothing is written and no server is started.
2. The archive: when the run's archive path does not exist and the model was made from the
   synthetic world (its card's metadata describes the world: ``archive_world`` for a trained
   model, ``world`` for the exact model), the archive is rebuilt there from that description
   (``archive_range``, default 2000-01-01 to 2001-12-31). This is how the demo sets up a fresh
   clone. ``--no-build-archive`` turns it off; any other missing archive is an error (exit 2).
   Then the archive is opened and every start date checked against it.
3. A Prefect API: ``PREFECT_API_URL`` if set (it must answer), else a server kept earlier with
   ``--keep-server`` (``.prefect/server.json``), else a new local server on loopback with its
   database in ``.prefect/`` of the current directory (``$PRIORFLOW_PREFECT_HOME`` to move it),
   stopped at the end unless ``--keep-server``. Never Prefect's ephemeral mode (it breaks with
   Dask workers).
4. The flow; then the store path and the UI address of the flow run are printed. Exit status 1
   when the flow fails (e.g. missing members, named in the message; rerun with the same
   ``--run-id`` to resume). ``--check`` runs the prior check after generation, as the nightly
   deployment does (the run fails when the check fails).

Prefect, Dask and torch are imported only inside the command.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from cli.options import ConfigArgument, RunIdOption, SetOption


def build_synthetic_archive(path: str, spec: dict[str, Any]) -> Path:
    """Build the synthetic archive ``spec`` describes at ``path``, with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from priorflow.data.synthetic_archive import archive_size
    from priorflow.data.synthetic_archive import build_synthetic_archive as build

    states, size = archive_size(
        spec["start"],
        spec["end"],
        tuple(spec["world"].get("shape", (4, 16, 32))),
        spec["dt_hours"],
    )
    typer.echo(
        f"archive {path} is missing; building it from the model's synthetic world"
        f" ({states:,} states, {size / 2**20:,.0f} MiB)"
    )
    with Progress(
        TextColumn("[bold]building archive[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} states"),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task(str(path), total=None)
        return build(
            path, spec, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )


def _terminated(run_id: str) -> Any:
    """A SIGTERM handler: unwind (the flow run is marked Crashed, the cluster and the server this
    command started stop), then exit 143 with one line saying how to resume."""

    def handler(signum: int, frame: Any) -> None:
        typer.echo(
            f"error: priorflow run was terminated (SIGTERM); run it again with --run-id {run_id}"
            " to resume",
            err=True,
        )
        raise SystemExit(128 + signum)

    return handler


def run(
    config: ConfigArgument,
    overrides: SetOption = [],  # noqa: B006  (typer reads the default; it is never mutated)
    run_id: RunIdOption = None,
    check: bool = typer.Option(
        False,
        "--check",
        help="Run the prior check after generation (as the nightly deployment does).",
    ),
    keep_server: bool = typer.Option(
        False,
        "--keep-server",
        help="Leave the local Prefect server running after the run (to browse the UI).",
    ),
    build_archive: bool = typer.Option(
        True,
        "--build-archive/--no-build-archive",
        help="Build a missing archive when the model card describes its synthetic world.",
    ),
) -> None:
    """Generate a run's prior trajectories with the prior-generation flow (Prefect + Dask)."""
    if not os.environ.get("PREFECT_API_URL"):
        # The embedded default: the server priorflow starts has analytics off, and so has this
        # client (read when Prefect is imported; its first-run notice would tear the display).
        os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.preflight import check_where_jobs_run
    from flows.run_config import load_run_config
    from priorflow.run.prepare import check_resumable, prepare_run

    run_config = load_run_config(config, overrides, run_id)  # fixes a default run_id once
    prepared = prepare_run(
        run_config, build_archive=build_synthetic_archive if build_archive else None
    )
    resumed = check_resumable(prepared)  # a resumed run must not change its store
    plan = prepared.plan
    check_where_jobs_run(run_config.hardware, max((job.gpus for job in plan.jobs), default=0))
    typer.echo(
        f"run {plan.run_id}: {plan.num_jobs} members ({len(plan.sizes)} sizes x"
        f" {len(plan.start_dates)} dates x {plan.members}) -> {plan.run_dir}"
        + (" (resumed)" if resumed else "")
    )

    import logging

    import distributed  # noqa: F401  (configures its loggers on import; quieten them after)

    from cli.progress import RunProgress
    from cli.watch import ServerWatch
    from flows.generate import generate_priors
    from flows.server import ensure_local_server, prefect_home

    terminal = sys.stdout.isatty()
    if terminal and run_config.hardware.backend == "local":
        # Local workers share this terminal; their console logs would tear the live display.
        # Each member's end is shown above it instead, and every log still reaches the API.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")

    # The in-process Dask scheduler's INFO lines (worker registration...) are noise here.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminated(plan.run_id))
    with ensure_local_server(prefect_home(), keep=keep_server) as server:
        if server.started:
            how = "a local server" + (", kept after the run" if keep_server else "")
        elif server.pid is not None:
            how = f"the server kept earlier (pid {server.pid}; stop it with: kill {server.pid})"
        else:
            how = "PREFECT_API_URL"
        typer.echo(f"prefect   {server.ui_url} ({how})")
        with (
            RunProgress(plan, server.api_url, terminal=terminal) as progress,
            ServerWatch(server.api_url, plan.run_id, before_exit=progress.stop_display),
        ):
            state = generate_priors(config=run_config, check=check, return_state=True)
        flow_run_id = state.state_details.flow_run_id
        typer.echo(f"store     {Path(plan.run_dir).resolve() / 'prior.zarr'}")
        typer.echo(f"flow run  {server.flow_run_url(flow_run_id)}")
        if server.started and not keep_server:
            typer.echo(
                "          the server stopped with this run; to browse it:"
                f" priorflow ui --port {server.port} (or run with --keep-server)"
            )
    if not state.is_completed():
        message = " ".join(str(state.message or state.type.value).split())
        typer.echo(f"error: the run did not complete: {message}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``priorflow run`` to the app."""
    app.command("run")(run)
