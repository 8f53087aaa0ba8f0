r"""The latent archive: encoded, standardised states, in a zarr store or Appa's HDF5 file.

:func:`open_archive` opens either; Appa's HDF5 archive (``latents``, ``dates`` and the
``stats.pth`` beside it) is described in :mod:`priorflow.data.appa_archive`. The zarr layout:

Layout (what :func:`~priorflow.data.synthetic_archive.write_synthetic_archive` writes and
:func:`open_archive` reads)::

    latent(time, channel, y, x)  float32, chunked by day along time (24 / dt_hours states)
    time                         datetime64[ns], regular, dt_hours apart
    attrs: dt_hours              hours between states
           stats                 {"mean": [C], "std": [C], "count": N}: per-channel statistics
                                 of the stored (standardised) states
           world                 description of the synthetic world that made it (if any)
           description, created_by

Any store with a ``latent`` variable whose first dimension is a regular ``time`` coordinate
works: the state dimensions are whatever follows ``time``.

Climatology (:meth:`LatentArchive.climatology`): for a valid time ``t``, the mean of all archive
states at the same hour of day whose day of year lies within ``window_days`` (default 15) of
``t``'s, over all years of the archive (circular in the year, so late December borrows from early
January). A smoothed day-of-year/hour climatology: with two years of hourly data a single
calendar day would average only two states.
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from priorflow.core.dates import year_progress
from priorflow.errors import ArchiveError

LATENT = "latent"
_HOUR = np.timedelta64(1, "h")


def _label(time: np.datetime64 | datetime) -> str:
    return str(np.datetime64(time, "h")).replace("T", " ") + "h"


def _as_datetime(time: np.datetime64) -> datetime:
    return np.datetime64(time, "s").astype(datetime)


class LatentArchive:
    """An opened latent archive (lazy: data are read on demand), whatever its file format.

    Attributes:
        path: the archive's path.
        dt_hours: hours between consecutive states.
        times: valid times, ``datetime64[ns]`` of shape ``(N,)``.
        state_dims: names of the state dimensions, e.g. ``("channel", "y", "x")``.
        state_shape: shape of one state, e.g. ``(4, 16, 32)``.
        attrs: the archive's own attributes (a zarr store's, e.g. ``stats`` and ``world``).
        standardization: how the states were standardized on reading (Appa's HDF5 archives:
            mean, std and the sha256 of ``stats.pth``), ``None`` when they are given as stored.

    ``read(index)`` reads the rows ``index`` (a slice, or sorted unique integers) as float32.
    """

    def __init__(
        self,
        path: Path,
        times: np.ndarray,
        state_shape: tuple[int, ...],
        read: Callable[[slice | np.ndarray], np.ndarray],
        *,
        state_dims: tuple[str, ...] | None = None,
        attrs: dict[str, Any] | None = None,
        standardization: dict[str, Any] | None = None,
    ):
        self.path = path
        self.attrs = dict(attrs or {})
        self.standardization = standardization
        self.state_shape = tuple(int(s) for s in state_shape)
        self.state_dims = tuple(state_dims or (f"state_{i}" for i in range(len(state_shape))))
        self.times = np.asarray(times, dtype="datetime64[ns]")
        if len(self.times) == 0:
            raise ArchiveError(f"archive: {path} holds no states (its time axis is empty)")
        steps = np.unique(np.diff(self.times)) if len(self.times) > 1 else np.array([])
        attr_dt = self.attrs.get("dt_hours")
        if len(steps) > 1 or (len(steps) == 1 and steps[0] <= np.timedelta64(0)):
            raise ArchiveError(
                f"archive: {path} has an irregular time axis (steps {steps[:3] / _HOUR} h); "
                "rewrite it with one dt"
            )
        if len(steps) == 1:
            dt = steps[0] / _HOUR
            if dt != int(dt) or dt < 1 or (attr_dt is not None and int(attr_dt) != dt):
                raise ArchiveError(
                    f"archive: {path} has time step {dt} h but attribute dt_hours={attr_dt}; "
                    "fix the attribute or the time axis"
                )
            self.dt_hours = int(dt)
        else:
            self.dt_hours = int(attr_dt or 1)
        self._read = read
        self._start = self.times[0]
        self._step = np.timedelta64(self.dt_hours, "h")

    # ---------------------------------------------------------------- range

    @property
    def start(self) -> datetime:
        """The first valid time."""
        return _as_datetime(self.times[0])

    @property
    def end(self) -> datetime:
        """The last valid time."""
        return _as_datetime(self.times[-1])

    @property
    def range_label(self) -> str:
        """``"2000-01-01 00h to 2001-12-31 23h every 1 h"``."""
        return f"{_label(self.times[0])} to {_label(self.times[-1])} every {self.dt_hours} h"

    def __len__(self) -> int:
        return len(self.times)

    def __repr__(self) -> str:
        return f"LatentArchive({str(self.path)!r}, {self.range_label}, state {self.state_shape})"

    @property
    def stats(self) -> dict[str, Any]:
        """The standardisation statistics stored in the attributes (``{}`` when absent)."""
        return dict(self.attrs.get("stats", {}))

    @property
    def world(self) -> Any:
        """The :class:`~priorflow.data.synthetic.SyntheticWorld` that wrote this archive (rebuilt from
        the ``world`` attribute), or ``None`` for an archive of real data. Its exact statistics
        are the truth the archive samples; ``write_exact_model(dir, **archive.world.kwargs)``
        gives its exact model."""
        description = self.attrs.get("world")
        if not description or "kwargs" not in description:
            return None
        from priorflow.data.synthetic import SyntheticWorld

        return SyntheticWorld(**description["kwargs"])

    def require_covers(
        self, start: datetime, length: int, dt_hours: int, field: str = "start_dates"
    ) -> None:
        """Raise :class:`ArchiveError` unless the ``length`` states from ``start``, ``dt_hours``
        apart, are all archive times (inside the range and on its time grid)."""
        first = np.datetime64(start, "ns")
        last = first + max(int(length) - 1, 0) * np.timedelta64(int(dt_hours), "h")
        where = f"archive {self.path} covers {self.range_label}"
        if first < self.times[0] or last > self.times[-1]:
            span = f"{_label(first)}" + (
                f" + {length} states x {dt_hours} h (to {_label(last)})" if length > 1 else ""
            )
            raise ArchiveError(
                f"{field}: {span} lies outside the archive; {where}; choose dates inside it"
            )
        if (first - self.times[0]) % self._step or (int(dt_hours) % self.dt_hours):
            raise ArchiveError(
                f"{field}: {_label(first)} every {dt_hours} h is not on the archive's time grid; "
                f"{where}"
            )

    # ---------------------------------------------------------------- data

    def indices(self, times: Any, field: str = "times") -> np.ndarray:
        """Archive indices of ``times`` (datetime64, any shape); :class:`ArchiveError` if one is
        not an archive time."""
        times = np.asarray(times, dtype="datetime64[ns]")
        offsets = times - self._start
        index = offsets // self._step
        bad = (offsets % self._step != np.timedelta64(0)) | (index < 0) | (index >= len(self))
        if np.any(bad):
            first = times.reshape(-1)[np.argmax(bad.reshape(-1))]
            raise ArchiveError(
                f"{field}: {_label(first)} is not in the archive; archive {self.path} covers "
                f"{self.range_label}"
            )
        return index.astype(np.int64)

    def states(self, times: Any) -> np.ndarray:
        """The states at ``times`` (datetime64 of shape ``(n,)``): float32 ``(n, *state_shape)``."""
        times = np.asarray(times, dtype="datetime64[ns]")
        index = self.indices(times).reshape(-1)
        if len(index) == 0:
            return np.zeros((0, *self.state_shape), dtype=np.float32)
        lo, hi = int(index.min()), int(index.max()) + 1
        if hi - lo <= 4 * len(index):  # nearly contiguous: one slice read
            out = self._read(slice(lo, hi))[index - lo]
        else:
            unique, inverse = np.unique(index, return_inverse=True)
            out = self._read(unique)[inverse.reshape(-1)]
        return out.reshape(*times.shape, *self.state_shape)

    def load(self) -> np.ndarray:
        """All states in memory: float32 ``(N, *state_shape)`` (for training)."""
        return self._read(slice(None))

    def climatology(self, times: Any, window_days: float = 15) -> np.ndarray:
        """Smoothed day-of-year/hour climatology at ``times`` (any valid times, not necessarily in
        the archive): float32 ``(n, *state_shape)``; see the module docstring."""
        times = np.asarray(times, dtype="datetime64[ns]").reshape(-1)
        all_day, all_hour = _day_of_year(self.times), _hour(self.times)
        day, hour = _day_of_year(times), _hour(times)
        keys, inverse = np.unique(
            np.stack([np.round(day, 6), hour], axis=1), axis=0, return_inverse=True
        )
        inverse = inverse.reshape(-1)
        groups = []
        for d, h in keys:
            distance = np.abs(all_day - d)
            distance = np.minimum(distance, 365.25 - distance)
            rows = np.flatnonzero((all_hour == h) & (distance <= window_days))
            if len(rows) == 0:
                raise ArchiveError(
                    f"climatology: no archive state at hour {int(h)} within {window_days} days "
                    f"of day {d:.0f} of the year; archive {self.path} covers {self.range_label}"
                )
            groups.append(rows)
        needed = np.unique(np.concatenate(groups))
        data = self.states(self.times[needed]).astype(np.float64)
        position = np.searchsorted(needed, np.arange(len(self)))
        means = np.stack([data[position[rows]].mean(axis=0) for rows in groups])
        return means[inverse].astype(np.float32)


def _day_of_year(times: np.ndarray) -> np.ndarray:
    """Days since 1 January (fractional, leap years stretched to 365.25 days)."""
    return year_progress(times) * 365.25


def _hour(times: np.ndarray) -> np.ndarray:
    return ((times - times.astype("datetime64[D]")) // _HOUR).astype(np.int64)


# --------------------------------------------------------------------------------------------
# open


def open_archive(path: str | os.PathLike, standardize: bool = True) -> LatentArchive:
    """Open the latent archive at ``path`` (lazily): a zarr store, or Appa's HDF5 file.

    Arguments:
        path: a zarr store (``latent(time, ...)``, this module's layout) or an HDF5 file
            (``latents``, ``dates``: :mod:`priorflow.data.appa_archive`).
        standardize: for an HDF5 archive, give the states standardized with the ``stats.pth``
            beside it, as Appa's training saw them (zarr archives are stored standardized).

    Raises :class:`ArchiveError` (one line, naming the path) when it is missing, neither format,
    has no ``latent`` variable, or no regular time axis.
    """
    path = Path(path)
    if not path.exists():
        raise ArchiveError(
            f"archive: {path} does not exist; create it with "
            f"'priorflow archive synth --start 2000-01-01 --end 2001-12-31 --out {path}'"
        )
    if path.is_file():
        from priorflow.data.appa_archive import is_hdf5, open_hdf5_archive

        if is_hdf5(path):
            return open_hdf5_archive(path, standardize=standardize)
        raise ArchiveError(
            f"archive: {path} is not a zarr store (a file, and not HDF5 either); give a zarr"
            " store (a folder) or Appa's HDF5 latent archive"
        )
    return _open_zarr_archive(path)


def _open_zarr_archive(path: Path) -> LatentArchive:
    import xarray as xr

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = xr.open_zarr(path, chunks=None)
    except Exception as error:
        raise ArchiveError(
            f"archive: {path} is not a zarr store ({type(error).__name__}); give the path of "
            "a store written by 'priorflow archive synth' or xarray.to_zarr"
        ) from None
    if LATENT not in dataset.data_vars:
        found = ", ".join(map(str, dataset.data_vars)) or "none"
        raise ArchiveError(
            f"archive: {path} has no '{LATENT}' variable (found: {found}); the latent states "
            f"must be stored as '{LATENT}(time, ...)'"
        )
    latent = dataset[LATENT]
    if latent.dims[0] != "time" or "time" not in dataset.coords:
        raise ArchiveError(
            f"archive: {path}: '{LATENT}' has dims {latent.dims}; the first must be 'time' with "
            "a datetime64 coordinate"
        )
    if not np.issubdtype(dataset["time"].dtype, np.datetime64):
        raise ArchiveError(
            f"archive: {path}: coordinate 'time' is {dataset['time'].dtype}, not datetime64; "
            "store CF-encoded times (xarray does this for datetime64 values)"
        )
    variable = latent.variable  # lazily indexed backend array

    def read(index: slice | np.ndarray) -> np.ndarray:
        return np.asarray(variable[index].values, dtype=np.float32)

    return LatentArchive(
        path,
        dataset["time"].values,
        tuple(int(s) for s in latent.shape[1:]),
        read,
        state_dims=tuple(str(d) for d in latent.dims[1:]),
        attrs=dict(dataset.attrs),
    )
