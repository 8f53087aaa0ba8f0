"""Export a finished run to other layouts: ``pt`` (here) and ``netcdf``
(:mod:`~priorflow.store.export_netcdf`).

Every export reads each member once and checks it against its done mark before using it; a run
with members not done or damaged is refused (named), and every file is written atomically.

``pt``, the original script's layout, for existing evaluation scripts. For every trajectory
size (store group, e.g. ``72h``) two files in ``<out>/<group>/``:

- ``trajectories.pt``: float32 tensor ``(dates, members, T0, *state_shape)``;
- ``timestamps.pt``: long tensor ``(dates, members, T0, 4)`` (year, month, day, hour).

Both load with ``torch.load(path, weights_only=True)``. Dates and members are in the store's
order (the config's ``start_dates``; members 0..M-1). Only complete sizes are exported.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.atomic import write_file
from priorflow.errors import ConfigError, StoreError
from priorflow.store.integrity import MemberProblem, iter_members, refuse_damage
from priorflow.store.layout import (
    MARKS_DIR,
    has_store,
    member_names,
    read_store_attrs,
    resolve_group,
    store_path,
)

__all__ = ["FORMATS", "export_groups", "export_pt", "write_failed"]

FORMATS = ("pt", "netcdf")
TRAJECTORIES = "trajectories.pt"
TIMESTAMPS = "timestamps.pt"


def export_pt(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    size: int | str | None = None,
) -> list[Path]:
    """Write ``trajectories.pt`` and ``timestamps.pt`` per trajectory size.

    Arguments:
        run_dir: the run directory (``<output_dir>/<run_id>``).
        out: where to write (default ``<run_dir>/export``); each size goes to ``<out>/<group>/``.
        size: one size only (``72`` or ``"72h"``); default every size.

    Returns:
        The written files, trajectories then timestamps, size by size.

    Raises:
        StoreError: the run does not exist, a size has members that are not done or whose data
            does not match their done marks (named), or a file cannot be written (one line;
            nothing half-written).
        ConfigError: ``size`` is not a size of this run.
    """
    import torch
    import zarr

    run_dir = Path(run_dir)
    store = store_path(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    written: list[Path] = []
    for group in export_groups(run_dir, size):
        node = zarr.open_group(str(store), path=group, mode="r")
        D, M = node["latent"].shape[:2]
        trajectories = torch.empty(tuple(node["latent"].shape), dtype=torch.float32)
        problems = []
        for d, m, name, values, problem in iter_members(run_dir, group):  # one at a time
            if problem is not None:
                problems.append(MemberProblem(group, name, problem))
            trajectories[d, m] = torch.from_numpy(values)
        refuse_damage(problems, f"export of {run_dir}")
        stamps = torch.from_numpy(np.asarray(node["timestamps"][...], dtype=np.int64))
        timestamps = stamps[:, None].expand(D, M, *stamps.shape[1:]).contiguous()
        for name, tensor in ((TRAJECTORIES, trajectories), (TIMESTAMPS, timestamps)):
            written.append(_save(tensor, out / group / name))
    return written


def export_groups(run_dir: Path, size: int | str | None) -> list[str]:
    """The groups to export (``size``, or every size), each checked to be done.

    Raises:
        StoreError: no store in ``run_dir``, or a group with members that are not done.
        ConfigError: ``size`` is not a size of this run.
    """
    store = store_path(run_dir)
    if not has_store(run_dir):
        raise StoreError(f"run: {run_dir} has no {store.name} — give a run directory")
    attrs = read_store_attrs(store)
    schema = attrs["priorflow_schema"]
    groups = [resolve_group(attrs, size)[0]] if size is not None else list(schema["groups"])
    for group in groups:
        names = member_names(schema, group)
        missing = [
            name
            for row in names
            for name in row
            if not (run_dir / MARKS_DIR / group / f"{name}.json").exists()
        ]
        if missing:
            raise StoreError(
                f"{group}: {len(missing)} members are not done ({missing[0]}...) — finish the run"
                " (run it again with the same run_id) before exporting"
            )
    return groups


def _save(tensor: Any, path: Path) -> Path:
    """``torch.save`` atomically; a full disk (or any write error) is one line, and no folder
    made for it is left behind."""
    import torch

    made = [folder for folder in (path.parent.parent, path.parent) if not folder.exists()]
    try:
        return write_file(path, lambda handle: torch.save(tensor, handle))
    except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError
        raise write_failed(path, error, made) from None


def write_failed(path: Path, error: BaseException, made: list[Path]) -> StoreError:
    """The one-line error of a failed write of ``path``, after removing the folders ``made``
    for it (when empty)."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    reason = getattr(error, "strerror", None) or " ".join(str(error).split())[:120]
    return StoreError(
        f"--out: writing {path} failed ({reason}); nothing was left half-written — free"
        " space or choose another --out"
    )


def check_format(fmt: str) -> str:
    """Validate an export format name."""
    if fmt not in FORMATS:
        raise ConfigError(
            f"--format: {fmt!r} is not an export format — choose {', '.join(FORMATS)}"
        )
    return fmt
