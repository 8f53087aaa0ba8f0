"""Where a run's files are, and reading what a store says about itself.

``<output_dir>/<run_id>/`` holds ``config.yaml`` (the resolved config), ``prior.zarr`` (the
store), ``marks/<group>/<job name>.json`` (one done mark per member) and ``.lock`` (taken while
metadata is updated).
"""

from __future__ import annotations

import contextlib
import fcntl
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

STORE_NAME = "prior.zarr"
CONFIG_NAME = "config.yaml"
MARKS_DIR = "marks"
LOCK_NAME = ".lock"


def store_path(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>/prior.zarr``."""
    return Path(run_dir) / STORE_NAME


def has_store(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``<run_dir>/prior.zarr`` is a zarr store (its root metadata exists)."""
    return (store_path(run_dir) / "zarr.json").exists()


def mark_path(run_dir: str | os.PathLike[str], job: Job) -> Path:
    """``<run_dir>/marks/<group>/<job name>.json``: the job's done mark."""
    return Path(run_dir) / MARKS_DIR / job.group / f"{job.name}.json"


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
    """The root attributes of ``prior.zarr`` (``priorflow_schema``, the sampling spec, ...)."""
    import zarr

    try:
        root = zarr.open_group(str(store), mode="r")
    except Exception as error:
        raise StoreError(f"store: {store} cannot be opened as zarr — {error}") from None
    attrs = root.attrs.asdict()
    if "priorflow_schema" not in attrs:
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
    """The group of one size as a lazy ``xarray.Dataset`` (``size``: 72 or ``"72h"``)."""
    import xarray as xr

    store = store_path(run_dir)
    group, _ = resolve_group(read_store_attrs(store), size)
    return xr.open_zarr(str(store), group=group)
