"""The synthetic latent archive: the synthetic world's states written as a latent archive.

:func:`write_synthetic_archive` writes ``world.sample(times)`` from a start to an end date into a
new zarr store (the layout of :mod:`priorflow.data.archive`), built beside its final place and
renamed in when complete. :func:`synthetic_archive_spec` reads, from a model card's metadata, how
the archive a model was trained on can be rebuilt (how the demo sets up a fresh clone).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.atomic import staging_directory
from priorflow.core.dates import parse_start_date
from priorflow.data.archive import LATENT, _label
from priorflow.errors import ArchiveError

#: The card metadata's ``kind`` of a synthetic world (and the one of earlier releases).
SYNTHETIC_WORLD_KINDS = ("priorflow.data.synthetic.SyntheticWorld", "priorflow.synthetic.SyntheticWorld")
DEFAULT_ARCHIVE_RANGE = ("2000-01-01", "2001-12-31")
MAX_ARCHIVE_BYTES = 2 << 30  # 2 GiB: the demo's two hourly years are 143 MB
_LAST_YEAR = 2261  # datetime64[ns] ends in April 2262


def archive_size(
    start: datetime | str, end: datetime | str, shape: tuple[int, ...], dt_hours: int = 1
) -> tuple[int, int]:
    """``(states, bytes)`` of a synthetic archive from ``start`` to ``end``; refuses an empty
    range or one past what ``datetime64[ns]`` holds (one line, :class:`ArchiveError`)."""
    first = parse_start_date(start, field="start")
    last = parse_end(end, dt_hours)
    for name, when in (("start", first), ("end", last)):
        if not 1678 <= when.year <= _LAST_YEAR:
            raise ArchiveError(
                f"{name}: {_label(when)} lies outside the years 1678-{_LAST_YEAR} a latent archive"
                " can hold; choose dates inside them"
            )
    if last < first:
        raise ArchiveError(f"end: {_label(last)} is before start {_label(first)}; swap them")
    states = int((last - first).total_seconds() // 3600 // dt_hours) + 1
    return states, states * math.prod(shape) * 4


def parse_end(end: datetime | str, dt_hours: int = 1, field: str = "end") -> datetime:
    """The last valid time: a ``datetime``, ``"YYYY-MM-DD Hh"``, or a bare ``"YYYY-MM-DD"`` that
    means the whole day (its last state, ``24 - dt_hours`` o'clock)."""
    last = parse_start_date(end, field=field)
    if isinstance(end, str) and re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}\s*", end):
        last += timedelta(hours=24 - dt_hours)
    return last


def write_synthetic_archive(
    path: str | os.PathLike,
    start: datetime | str,
    end: datetime | str,
    world: Any = None,
    dt_hours: int = 1,
    progress: Callable[[int, int], None] | None = None,
    *,
    seed: int = 0,
    overwrite: bool = False,
    block_days: int = 31,
    max_bytes: int = MAX_ARCHIVE_BYTES,
) -> Path:
    """Write the synthetic world's states from ``start`` to ``end`` (inclusive) to a new archive.

    Arguments:
        path: the store to create.
        start, end: first and last valid time (``datetime`` or ``"YYYY-MM-DD[ Hh]"``; a bare
            end date includes the whole day).
        world: a :class:`~priorflow.data.synthetic.SyntheticWorld` (default: the embedded default
            world with seed 0).
        dt_hours: hours between states.
        progress: called as ``progress(states_written, states_total)`` after each block.
        seed: seeds the ``torch.Generator`` that draws the trajectory.
        overwrite: replace an existing store at ``path``.
        block_days: days of states computed and written at a time.
        max_bytes: the largest archive written (:data:`MAX_ARCHIVE_BYTES`); more is refused
            before anything is written, as are an empty range and dates past 2261.

    The trajectory is ``world.sample(times, make_generator(seed))``. The store is written into a
    temporary directory next to ``path`` and renamed into place at the end, so a crash never
    leaves a half-written archive under ``path``. Returns ``path``.
    """
    import dask.array as da
    import xarray as xr
    import zarr

    from priorflow import __version__
    from priorflow.core.seeds import make_generator
    from priorflow.data.synthetic import SyntheticWorld

    path = Path(path)
    if dt_hours < 1 or 24 % dt_hours:
        raise ArchiveError(f"dt_hours: {dt_hours} must divide 24 (1, 2, 3, 4, 6, 8, 12 or 24)")
    world = world if world is not None else SyntheticWorld(seed=0)
    states, size = archive_size(start, end, tuple(world.shape), dt_hours)
    if size > max_bytes:
        raise ArchiveError(
            f"end: {states:,} states of {tuple(world.shape)} from {start} to {end} make"
            f" {size / 2**30:.1f} GiB, more than the {max_bytes / 2**30:.1f} GiB allowed; choose a"
            " shorter range (or allow more with --max-gib)"
        )
    first = parse_start_date(start, field="start")
    last = parse_end(end, dt_hours)
    if path.exists() and not overwrite:
        raise ArchiveError(f"archive: {path} already exists; remove it or pass --overwrite")
    step = np.timedelta64(dt_hours, "h")
    times = np.arange(np.datetime64(first, "ns"), np.datetime64(last, "ns") + step, step)
    times = times.astype("datetime64[ns]")
    shape = tuple(world.shape)
    chunk = 24 // dt_hours
    total = len(times)

    with staging_directory(path) as tmp:
        schema = xr.Dataset(
            {
                LATENT: (
                    ("time", "channel", "y", "x"),
                    da.zeros((total, *shape), dtype=np.float32, chunks=(chunk, *shape)),
                )
            },
            coords={"time": times},
        )
        schema.attrs.update(
            dt_hours=int(dt_hours),
            description="synthetic latent archive: standardised states of a known Gaussian world",
            created_by=f"priorflow {__version__} write_synthetic_archive",
            seed=int(seed),
            world=world.describe(),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schema.to_zarr(
                tmp,
                mode="w",
                compute=False,
                zarr_format=3,
                encoding={"time": {"units": "hours since 1970-01-01", "dtype": "int64"}},
            )
        array = zarr.open_array(tmp / LATENT, mode="r+")
        total_sum = np.zeros(shape[0])
        total_square = np.zeros(shape[0])
        block = block_days * chunk
        generator = make_generator(int(seed))
        for offset, states in world.iter_sample(times, generator, chunk=block):
            array[offset : offset + len(states)] = states
            data = states.astype(np.float64)
            total_sum += data.sum(axis=(0, 2, 3))
            total_square += (data**2).sum(axis=(0, 2, 3))
            if progress is not None:
                progress(offset + len(states), total)
        count = total * shape[1] * shape[2]
        mean = total_sum / count
        stats = {
            "mean": mean.tolist(),
            "std": np.sqrt(np.maximum(total_square / count - mean**2, 0)).tolist(),
            "count": int(total),
            "note": "per-channel statistics of the stored states (already standardised)",
        }
        group = zarr.open_group(tmp, mode="r+")
        group.attrs.update({"stats": stats})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(tmp)
    return path


def synthetic_archive_spec(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How to rebuild the synthetic archive a model card's ``metadata`` describes, or None.

    Returns ``{"world": kwargs, "start", "end", "seed", "dt_hours"}`` from ``archive_world`` (a
    trained model) or ``world`` (an exact model) of a synthetic kind, ``archive_range``,
    ``archive_seed`` and ``archive_dt_hours`` (defaults: the ``archive synth`` command's).
    """
    metadata = metadata or {}
    world = metadata.get("archive_world") or metadata.get("world")
    if not isinstance(world, dict) or world.get("kind") not in SYNTHETIC_WORLD_KINDS:
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


def build_synthetic_archive(
    path: str | os.PathLike[str],
    spec: Mapping[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the synthetic archive ``spec`` (:func:`synthetic_archive_spec`) to ``path``."""
    from priorflow.data.synthetic import SyntheticWorld

    return write_synthetic_archive(
        path,
        spec["start"],
        spec["end"],
        world=SyntheticWorld(**spec["world"]),
        dt_hours=spec["dt_hours"],
        progress=progress,
        seed=spec["seed"],
    )
