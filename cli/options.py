"""Arguments and options shared by the commands (declared once)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigArgument = Annotated[Path, typer.Argument(help="Run config (YAML).")]
SetOption = Annotated[
    list[str],
    typer.Option(
        "--set",
        help="Override a config key: --set diffusion.num_steps=32 (repeatable; YAML values).",
    ),
]
RunIdOption = Annotated[
    str | None,
    typer.Option(
        "--run-id", help="Name of the run; reuse one to resume it (default: from config)."
    ),
]
