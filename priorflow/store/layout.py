"""Where a run's files are, and reading what a store says about itself.

``<output_dir>/<run_id>/`` holds ``config.yaml`` (the resolved config), ``prior.zarr`` (the
store), ``marks/<group>/<job name>.json`` (one done mark per member), ``.lock`` (taken while
the store's metadata changes) and ``.priorflow-run``, the marker that says priorflow made the
directory: priorflow writes into, deletes from or resumes only a run directory it made
(:func:`claim_run_dir`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.errors import ConfigError, StoreError
from priorflow.plan import Job, job_name
from priorflow.store.attributes import nested_attrs

STORE_NAME = "prior.zarr"
CONFIG_NAME = "config.yaml"
MARKS_DIR = "marks"
LOCK_NAME = ".lock"
RUN_MARKER = ".priorflow-run"


def store_path(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>/prior.zarr``."""
    return Path(run_dir) / STORE_NAME


def has_store(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``<run_dir>/prior.zarr`` is a zarr store (its root metadata exists)."""
    return (store_path(run_dir) / "zarr.json").exists()


def mark_path(run_dir: str | os.PathLike[str], job: Job) -> Path:
    """``<run_dir>/marks/<group>/<job name>.json``: the job's done mark."""
    return Path(run_dir) / MARKS_DIR / job.group / f"{job.name}.json"


def is_run_dir(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` is a directory priorflow made (it holds the run marker)."""
    run_dir = Path(run_dir)
    return not run_dir.is_symlink() and (run_dir / RUN_MARKER).is_file()


def claim_run_dir(run_dir: Path, run_id: str) -> bool:
    """Make ``run_dir`` with its marker, or check that an existing one is priorflow's.

    Returns whether the directory was made here. Raises :class:`StoreError` (one line, nothing
    touched) for a symbolic link, a file, or an existing directory without the marker that
    holds anything (an empty one is claimed).
    """
    if not check_claimable(run_dir, run_id):
        return False
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(run_dir / RUN_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process claimed it first
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"run_id": run_id, "made_by": "priorflow"}) + "\n")
    return made


def check_claimable(run_dir: Path, run_id: str) -> bool:
    """Whether ``run_dir`` is still to be made (or is empty); False when it is priorflow's.

    Writes nothing. Raises :class:`StoreError` as :func:`claim_run_dir` does.
    """
    where = f"run_id {run_id!r}: {run_dir}"
    fix = "choose another run_id or output_dir"
    if run_dir.is_symlink():
        raise StoreError(
            f"{where} is a symbolic link — priorflow writes only into a run directory it made; {fix}"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise StoreError(f"{where} is a file, not a run directory; {fix}")
    if is_run_dir(run_dir):
        return False
    if run_dir.exists() and any(run_dir.iterdir()):
        if is_run_dir(run_dir):  # claimed by a concurrent run since the first look
            return False
        schema = _earlier_store(run_dir)
        if schema is not None:
            raise StoreError(
                f"{where} was made by an earlier priorflow (store schema {schema}); it can be"
                f" read and checked but not resumed — {fix}"
            )
        raise StoreError(
            f"{where} exists and was not made by priorflow (no {RUN_MARKER}) — priorflow never"
            f" writes into a directory it did not make; {fix}"
        )
    return True


def _earlier_store(run_dir: Path) -> Any:
    """The schema version of a priorflow store made before run markers, else None."""
    try:
        attrs = json.loads((store_path(run_dir) / "zarr.json").read_text())["attributes"]
        return nested_attrs(attrs)["priorflow_schema"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``<run_dir>/.lock`` (metadata updates by concurrent writers)."""
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def consolidate(store: Path) -> None:
    """Write the store's consolidated metadata (one read for ``xarray.open_zarr``)."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(store))


def to_json(value: Any) -> Any:
    """Make ``value`` JSON-able: numpy scalars, tensors' items, paths, datetimes, devices."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return to_json(value.item())
    return str(value)


def read_store_attrs(store: Path) -> dict[str, Any]:
    """The root attributes of ``prior.zarr`` (``priorflow_schema``, the sampling spec, ...),
    nested again (:func:`~priorflow.store.attributes.nested_attrs`): ``attrs["diffusion"]
    ["num_steps"]`` where the store says ``diffusion.num_steps``."""
    import zarr

    try:
        root = zarr.open_group(str(store), mode="r")
    except Exception as error:
        raise StoreError(f"store: {store} cannot be opened as zarr — {error}") from None
    attrs = nested_attrs(root.attrs.asdict())
    if not isinstance(attrs.get("priorflow_schema"), dict):
        raise StoreError(
            f"store: {store} is not a priorflow store (no priorflow_schema attribute)"
        )
    return attrs


def resolve_group(attrs: dict[str, Any], size: int | str) -> tuple[str, dict[str, Any]]:
    """``(group name, schema entry)`` of ``size`` (72 or "72h") from :func:`read_store_attrs`."""
    groups = attrs["priorflow_schema"]["groups"]
    if isinstance(size, str) and size.strip().isdigit():
        size = int(size)
    for name, info in groups.items():
        if size in (name, info["states"]) or str(size) == name:
            return name, info
    raise ConfigError(f"size: {size!r} is not in this run — it has {', '.join(groups)}")


def member_names(schema: dict[str, Any], group: str) -> list[list[str]]:
    """Job names ``[date][member]`` of a group, from the store's ``priorflow_schema``."""
    starts = [datetime.fromisoformat(s) for s in schema["start_dates"]]
    return [[job_name(group, start, m) for m in range(schema["members"])] for start in starts]


def open_group(run_dir: str | os.PathLike[str], size: int | str) -> Any:
    """The group of one size as a lazy ``xarray.Dataset`` (``size``: 72 or ``"72h"``), its
    attributes nested as :func:`read_store_attrs` gives them (``ds.attrs["card"]
    ["blanket_size"]``; ``xarray.open_zarr`` shows them flat, ``card.blanket_size``)."""
    import xarray as xr

    store = store_path(run_dir)
    group, _ = resolve_group(read_store_attrs(store), size)
    dataset = xr.open_zarr(str(store), group=group)
    dataset.attrs = nested_attrs(dataset.attrs)
    return dataset
