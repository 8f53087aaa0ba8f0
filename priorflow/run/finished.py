"""Finding the finished runs under an output folder: what ``prior-check`` checks by default.

A run is *finished* when priorflow made its directory (the ``.priorflow-run`` marker, not a
symbolic link) and every trajectory size of its store is aggregated (``aggregated: true``,
written once every member has its done mark). The newest is the one whose last size was
aggregated last (its ``end_time``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from priorflow.errors import ConfigError
from priorflow.store import store_path
from priorflow.store.layout import is_run_dir, read_store_attrs


def finished_at(run_dir: str | os.PathLike[str]) -> str | None:
    """When the run finished (the latest ``end_time`` of its sizes, ISO text), or None when it
    is not a finished priorflow run."""
    import zarr

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir) or not store_path(run_dir).is_dir():
        return None
    try:
        groups = read_store_attrs(store_path(run_dir))["priorflow_schema"]["groups"]
        root = zarr.open_group(str(store_path(run_dir)), mode="r")
        attrs = [root[group].attrs.asdict() for group in groups]
    except Exception:  # unreadable, partial or not priorflow's: not a finished run
        return None
    if not attrs or not all(a.get("aggregated") and a.get("end_time") for a in attrs):
        return None
    return max(str(a["end_time"]) for a in attrs)


def newest_finished_run(output_dir: str | os.PathLike[str]) -> Path:
    """The newest finished run directly under ``output_dir``.

    Raises:
        ConfigError: one line when there is none (or ``output_dir`` is not a folder).
    """
    root = Path(output_dir).expanduser().absolute()
    runs: list[tuple[str, Path]] = []
    with contextlib.suppress(OSError):
        for run_dir in root.iterdir():
            if (when := finished_at(run_dir)) is not None:
                runs.append((when, run_dir))
    if not runs:
        raise ConfigError(
            f"run_dir: not given, and {root} holds no finished run (a run directory priorflow"
            " made with every size aggregated) — give run_dir, or output_dir where the runs are"
        )
    return max(runs)[1]
