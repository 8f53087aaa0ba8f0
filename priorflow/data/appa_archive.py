r"""Appa's latent archive: an HDF5 file of latents and dates, standardized with ``stats.pth``.

Appa dumps the encoded states of a reanalysis to one HDF5 file in its latent dump folder::

    latents   (N, *state)  float   one row per time step (state e.g. (nodes, channels))
    dates     (N, 4)       int     (year, month, day, hour) of each row
    stats.pth (beside it)  {"mean": (C,), "std": (C,)} per latent channel (the last state axis)

Training standardizes every state, :math:`z = (x - \mu) / \sigma` per channel, so the denoiser
samples standardized latents. :func:`open_hdf5_archive` gives the archive in that same space
(``standardize=True``), so that the prior check compares like with like; the statistics and the
sha256 of ``stats.pth`` are kept in :attr:`LatentArchive.standardization` for the run's store,
so that a decoder can undo it (:math:`x = \sigma z + \mu`). ``stats.pth`` is read with
``torch.load(weights_only=True)``: no code runs from it. The file is opened for each read and
closed after, so an opened archive holds no file handle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.data.archive import LatentArchive
from priorflow.errors import ArchiveError

LATENTS, DATES = "latents", "dates"
STATS_NAME = "stats.pth"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: An archive whose rows exceed this many values per state is refused (a state of 2**31 values
#: is far beyond any latent space; the bound keeps a corrupt header from allocating memory).
MAX_STATE_VALUES = 1 << 31


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` is a file that starts with the HDF5 signature."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ArchiveError(
            "archive: reading an Appa HDF5 archive needs h5py; install it with"
            " pip install 'priorflow[appa]'"
        ) from None
    return h5py


def _dates_to_times(path: Path, dates: np.ndarray) -> np.ndarray:
    """``(N, 4)`` (year, month, day, hour) rows as ``datetime64[ns]``; one line if one is bad."""
    if dates.ndim != 2 or dates.shape[1] != 4 or not np.issubdtype(dates.dtype, np.number):
        raise ArchiveError(
            f"archive: {path}: dataset '{DATES}' has shape {dates.shape} and dtype {dates.dtype};"
            " it must be (N, 4) integers (year, month, day, hour)"
        )
    rows = dates.astype(np.int64)
    year, month, day, hour = rows.T
    bad = (month < 1) | (month > 12) | (day < 1) | (day > 31) | (hour < 0) | (hour > 23)
    if np.any(bad):
        row = int(np.argmax(bad))
        raise ArchiveError(
            f"archive: {path}: row {row} of '{DATES}' is {rows[row].tolist()}, not a (year, month,"
            " day, hour) date"
        )
    months = (year - 1970) * 12 + (month - 1)
    first = months.astype("datetime64[M]").astype("datetime64[D]")
    times = first + (day - 1).astype("timedelta64[D]")
    if np.any(times.astype("datetime64[M]") != months.astype("datetime64[M]")):
        row = int(np.argmax(times.astype("datetime64[M]") != months.astype("datetime64[M]")))
        raise ArchiveError(
            f"archive: {path}: row {row} of '{DATES}' is {rows[row].tolist()}, a day its month"
            " does not have"
        )
    return (times.astype("datetime64[h]") + hour.astype("timedelta64[h]")).astype(
        "datetime64[ns]"
    )


def read_stats(file: Path, channels: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(mean, std, sha256)`` of Appa's ``stats.pth`` for states with ``channels`` channels.

    Raises:
        ArchiveError: one line when the file is missing, holds anything but tensors, lacks
            ``mean`` or ``std``, has a shape that is not ``(channels,)`` or a std that is not
            positive and finite.
    """
    import torch

    if not file.is_file():
        raise ArchiveError(
            f"archive: {file} is missing; Appa writes {STATS_NAME} (the latents' per-channel"
            " mean and std) beside the HDF5 archive: copy it there, or set"
            " train.standardize: false if the model was trained on raw latents"
        )
    try:
        stats = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ArchiveError(
            f"archive: {file} is not a readable torch file of tensors ({type(error).__name__});"
            " it must hold {'mean': tensor, 'std': tensor}"
        ) from None
    if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
        found = sorted(map(str, stats)) if isinstance(stats, dict) else type(stats).__name__
        raise ArchiveError(f"archive: {file} must hold 'mean' and 'std' (found {found})")
    arrays = []
    for key in ("mean", "std"):
        value = np.asarray(torch.as_tensor(stats[key], dtype=torch.float64).cpu().numpy())
        if value.reshape(-1).shape != (channels,):
            raise ArchiveError(
                f"archive: {file}: '{key}' has shape {tuple(value.shape)}; the latents have"
                f" {channels} channels (their last axis), so it must be ({channels},)"
            )
        arrays.append(value.reshape(-1))
    mean, std = arrays
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ArchiveError(f"archive: {file}: 'std' must be positive and 'mean' finite")
    return mean, std, hashlib.sha256(file.read_bytes()).hexdigest()


def open_hdf5_archive(path: Path, standardize: bool = True) -> LatentArchive:
    """Open Appa's HDF5 latent archive at ``path`` (lazily).

    Arguments:
        path: the HDF5 file (datasets ``latents`` and ``dates``).
        standardize: give the states as training saw them, ``(x - mean) / std`` with the
            ``stats.pth`` beside the file (required then); ``False`` gives the stored values.

    Raises:
        ArchiveError: one line naming the file and the fix.
    """
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as file:
            missing = [name for name in (LATENTS, DATES) if name not in file]
            if missing:
                found = ", ".join(sorted(file)) or "none"
                raise ArchiveError(
                    f"archive: {path} has no dataset {missing[0]!r} (found: {found}); an Appa"
                    f" latent archive holds '{LATENTS}' (N, *state) and '{DATES}' (N, 4)"
                )
            latents = file[LATENTS]
            shape = tuple(int(n) for n in latents.shape)
            dates = np.asarray(file[DATES][()])
    except ArchiveError:
        raise
    except Exception as error:
        raise ArchiveError(
            f"archive: {path} is not a readable HDF5 file ({type(error).__name__}); give Appa's"
            " latent archive (the dump folder's latent_data)"
        ) from None
    if len(shape) < 2 or int(np.prod(shape[1:])) > MAX_STATE_VALUES:
        raise ArchiveError(
            f"archive: {path}: '{LATENTS}' has shape {shape}; it must be (N, *state) with at most"
            f" {MAX_STATE_VALUES} values per state"
        )
    if len(dates) != shape[0]:
        raise ArchiveError(
            f"archive: {path}: '{LATENTS}' has {shape[0]} rows and '{DATES}' {len(dates)}; they"
            " must have one date per row"
        )
    times = _dates_to_times(path, dates)
    state_shape = shape[1:]
    standardization = None
    mean = std = None
    if standardize:
        stats_file = path.parent / STATS_NAME
        mean, std, digest = read_stats(stats_file, state_shape[-1])
        standardization = {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "stats_file": str(stats_file),
            "stats_sha256": digest,
            "axis": -1,
            "formula": "(x - mean) / std",
        }

    def read(index: slice | np.ndarray) -> np.ndarray:
        with h5py.File(path, "r") as file:
            data = np.asarray(file[LATENTS][index], dtype=np.float64)
        if mean is not None:
            data = (data - mean) / std
        return data.astype(np.float32)

    dims = tuple(f"state_{i}" for i in range(len(state_shape)))
    if len(state_shape) == 2:
        dims = ("node", "channel")
    return LatentArchive(
        path,
        times,
        state_shape,
        read,
        state_dims=dims,
        standardization=standardization,
        attrs={"format": "appa-hdf5"},
    )


def hdf5_state_shape(path: Path) -> tuple[int, ...]:
    """The shape of one state of the HDF5 archive at ``path`` (its header only)."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as file:
            shape = tuple(int(n) for n in file[LATENTS].shape)
    except Exception as error:
        raise ArchiveError(
            f"archive: {path} is not an Appa latent archive with a '{LATENTS}' dataset"
            f" ({type(error).__name__})"
        ) from None
    if len(shape) < 2:
        raise ArchiveError(f"archive: {path}: '{LATENTS}' has shape {shape}, not (N, *state)")
    return shape[1:]
