"""``priorflow run CONFIG [--set k=v ...] [--run-id ID] [--check] [--keep-server] [--no-build-archive]``.

Runs the ``prior-generation`` flow on a run config, in this process, with a progress bar for the
whole run. In order:

1. Validate everything first: the config, the model card and checkpoint, the plan. A problem is
   one line ``error: ...`` and exit status 2; nothing is written and no server is started.
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

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import typer

PREFECT_HOME_ENV = "PRIORFLOW_PREFECT_HOME"
DEFAULT_ARCHIVE_RANGE = ("2000-01-01", "2001-12-31")
SYNTHETIC_WORLD_KIND = "priorflow.data.synthetic.SyntheticWorld"


def prefect_home() -> Path:
    """Where a local Prefect server keeps its database: ``$PRIORFLOW_PREFECT_HOME`` or ``.prefect``."""
    return Path(os.environ.get(PREFECT_HOME_ENV) or ".prefect").resolve()


def synthetic_archive_spec(card: Any) -> dict[str, Any] | None:
    """How to rebuild the synthetic archive a model card describes, or None if it names none.

    Returns ``{"world": kwargs, "start", "end", "seed", "dt_hours"}`` from the card's metadata
    (``archive_world`` or ``world`` of kind SyntheticWorld, ``archive_range``, ``archive_seed``,
    ``archive_dt_hours``; defaults: the ``archive synth`` command's).
    """
    metadata = getattr(card, "metadata", None) or {}
    world = metadata.get("archive_world") or metadata.get("world")
    if not isinstance(world, dict) or world.get("kind") != SYNTHETIC_WORLD_KIND:
        return None
    kwargs = world.get("kwargs")
    if not isinstance(kwargs, dict):
        return None
    span = metadata.get("archive_range") or DEFAULT_ARCHIVE_RANGE
    return {
        "world": dict(kwargs),
        "start": str(span[0]),
        "end": str(span[1]),
        "seed": int(metadata.get("archive_seed", 0)),
        "dt_hours": int(metadata.get("archive_dt_hours", 1)),
    }


def build_synthetic_archive(path: str, spec: dict[str, Any]) -> Path:
    """Write the synthetic archive ``spec`` (:func:`synthetic_archive_spec`) to ``path``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from priorflow.data.archive import write_synthetic_archive
    from priorflow.data.synthetic import SyntheticWorld

    world = SyntheticWorld(**spec["world"])
    with Progress(
        TextColumn("[bold]building archive[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} states"),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task(str(path), total=None)
        return write_synthetic_archive(
            path,
            spec["start"],
            spec["end"],
            world=world,
            dt_hours=spec["dt_hours"],
            seed=spec["seed"],
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


class RunProgress:
    """A progress bar of a run's members, polling the store's done marks in a thread."""

    def __init__(self, plan: Any, interval: float = 0.5) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.plan = plan
        self.interval = interval
        self.bar = Progress(
            "[bold]members",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self.task = self.bar.add_task("members", total=plan.num_jobs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="priorflow-progress", daemon=True)

    def done(self) -> int:
        from priorflow.store import missing_jobs

        return self.plan.num_jobs - len(missing_jobs(self.plan.run_dir, self.plan))

    def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the store may not exist yet
                self.bar.update(self.task, completed=self.done())
            self._stop.wait(self.interval)

    def __enter__(self) -> RunProgress:
        self.bar.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.bar.update(self.task, completed=self.done())
        finally:
            self.bar.stop()


def run(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        help="Override a config key: --set diffusion.num_steps=32 (repeatable; YAML values).",
    ),
    run_id: str | None = typer.Option(
        None, "--run-id", help="Name of the run; reuse one to resume it (default: from config)."
    ),
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
    from priorflow.run.prepare import check_resume, prepare_run, resolve_config

    items = list(overrides)
    resolved = resolve_config(config, items, run_id)  # fixes a default run_id once
    run_id = str(resolved.run_id)
    prepared = prepare_run(config, items, run_id, check_archive=False)
    archive = prepared.archive_path
    if archive is not None and "://" not in archive and not Path(archive).exists():
        spec = synthetic_archive_spec(prepared.card) if build_archive else None
        if spec is not None:
            typer.echo(
                f"archive {archive} is missing; building it from the model's synthetic world"
            )
            build_synthetic_archive(archive, spec)
    prepared = prepare_run(config, items, run_id)  # now with the archive's dates checked
    resumed = check_resume(prepared)  # a resumed run must not change its store
    plan = prepared.plan
    typer.echo(
        f"run {plan.run_id}: {plan.num_jobs} members ({len(plan.sizes)} sizes x"
        f" {len(plan.start_dates)} dates x {plan.members}) -> {plan.run_dir}"
        + (" (resumed)" if resumed else "")
    )

    import logging

    import distributed  # noqa: F401  (configures its loggers on import; quieten them after)

    from flows.server import ensure_local_server

    # The in-process Dask scheduler's INFO lines (worker registration...) are noise here.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with ensure_local_server(prefect_home(), keep=keep_server) as server:
        if server.started:
            how = "a local server" + (", kept after the run" if keep_server else "")
        elif server.pid is not None:
            how = f"the server kept earlier (pid {server.pid}; stop it with: kill {server.pid})"
        else:
            how = "PREFECT_API_URL"
        typer.echo(f"prefect   {server.ui_url} ({how})")
        from flows.generate import generate_priors

        with RunProgress(plan):
            state = generate_priors(
                str(Path(config).resolve()),
                overrides=items or None,
                run_id=run_id,
                check=check,
                return_state=True,
            )
        flow_run_id = state.state_details.flow_run_id
        typer.echo(f"store     {Path(plan.run_dir).resolve() / 'prior.zarr'}")
        typer.echo(f"flow run  {server.flow_run_url(flow_run_id)}")
    if not state.is_completed():
        message = " ".join(str(state.message or state.type.value).split())
        typer.echo(f"error: the run did not complete: {message}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``priorflow run`` to the app."""
    app.command("run")(run)
