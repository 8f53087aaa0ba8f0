"""The ``priorflow`` command line.

Each sub-command lives in its own module of this package and registers itself through a
``register(app)`` function; heavy imports (torch, Prefect) happen inside the commands so that
``priorflow --help`` stays fast. User errors (:class:`~priorflow.errors.PriorflowError`) are
printed as one line, ``error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import sys

import typer

from cli import archive, check, export, model, plan, run, train, ui, verify
from priorflow.errors import PriorflowError

#: The command modules; each defines ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = (run, plan, check, verify, export, archive, model, train, ui)


def build_app() -> typer.Typer:
    """The Typer application with every available sub-command registered."""
    app = typer.Typer(
        name="priorflow",
        help="Prior trajectories from latent diffusion models, on Prefect + Dask (+ SLURM).",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root() -> None:
        """Prior trajectories from latent diffusion models, on Prefect + Dask (+ SLURM)."""

    @app.command()
    def version() -> None:
        """Print the priorflow version."""
        from priorflow import __version__

        typer.echo(__version__)

    for module in COMMAND_MODULES:
        module.register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit status 2."""
    app = build_app()
    try:
        app(args=argv)  # standalone: usage errors exit 2 with click's message
    except PriorflowError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
