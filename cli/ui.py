"""``priorflow ui [--port N]``: the Prefect UI of this project's runs, on loopback.

``priorflow run`` stops the local server it started when the run ends (unless
``--keep-server``), so the links it printed go dead. This starts the same server again, on the
same database (``./.prefect``, or ``$PRIORFLOW_PREFECT_HOME``), and keeps it running; with the
``--port`` a run printed, its links work again. A server already kept, or the one
``PREFECT_API_URL`` names, is used as it is. Stop a server started here with ``kill PID``.
"""

from __future__ import annotations

import typer


def ui(
    port: int | None = typer.Option(
        None, help="Port of a server started here (a run prints its port; default: a free one)."
    ),
) -> None:
    """Start (or find) the local Prefect server of this project's runs and keep it running."""
    from flows.server import ensure_local_server, prefect_home

    with ensure_local_server(prefect_home(), port=port, keep=True) as server:
        typer.echo(f"prefect UI  {server.ui_url}")
        if server.pid is not None and not server.started:
            typer.echo(
                f"            (kept earlier, pid {server.pid}; stop it with: kill {server.pid})"
            )


def register(app: typer.Typer) -> None:
    """Add ``priorflow ui`` to the app."""
    app.command("ui")(ui)
