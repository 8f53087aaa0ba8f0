"""What a backbone trains on: the states of a latent archive, cut into blankets.

:class:`TrainingData` holds the states and times; :func:`blanket_split` chooses the blanket starts
of the training and validation days; :class:`Batches` gathers blankets and their dates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from priorflow.core.dates import times_to_fields
from priorflow.errors import ConfigError


@dataclass
class TrainingData:
    """States and times to train on.

    Arguments:
        states: ``(N, *S)`` float32, standardised (unit scale).
        times: ``(N,)`` datetime64, increasing.
        dt_hours: spacing of the source (an archive's ``dt_hours``).
        source: where it came from (recorded as the card's ``archive``).
        world: description of the synthetic world that made the archive, if any (recorded in
            the card's metadata as ``archive_world``).
    """

    states: np.ndarray
    times: np.ndarray
    dt_hours: int
    source: str | None = None
    world: dict[str, Any] | None = None

    @classmethod
    def from_archive(cls, path: str | Path) -> TrainingData:
        """All states of the latent archive at ``path`` (see :mod:`priorflow.data.archive`)."""
        from priorflow.data.archive import open_archive

        archive = open_archive(path)
        world = archive.attrs.get("world")
        return cls(
            archive.load(),
            np.asarray(archive.times),
            archive.dt_hours,
            str(path),
            json.loads(json.dumps(world)) if isinstance(world, dict) else None,
        )

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.states.shape[1:])


@dataclass
class Split:
    """Blanket start indices (into the state array) for training and validation."""

    train: torch.Tensor
    val: torch.Tensor
    stride: int


def blanket_split(
    times: np.ndarray, source_dt: int, blanket_size: int, dt_hours: int, val_every_days: int
) -> Split:
    """Blanket starts whose ``K`` states are contiguous and lie in one split.

    A state belongs to validation when its day number since the first state's day is
    ``val_every_days - 1`` modulo ``val_every_days``; a blanket that straddles both is dropped.
    """
    if dt_hours % source_dt:
        raise ConfigError(
            f"dt_hours: {dt_hours} is not a multiple of the archive's dt_hours {source_dt};"
            " use a multiple of it"
        )
    stride = dt_hours // source_dt
    span = (blanket_size - 1) * stride
    n = len(times)
    if n <= span:
        raise ConfigError(
            f"blanket_size: {blanket_size} states {dt_hours} h apart need {span + 1} archive"
            f" states, the archive has {n}; use a longer archive or a smaller blanket"
        )
    hours = (np.asarray(times, dtype="datetime64[h]") - np.datetime64(times[0], "h")).astype(
        np.int64
    )
    day0 = np.datetime64(times[0], "D").astype("datetime64[h]") - np.datetime64(times[0], "h")
    days = (hours - day0.astype(np.int64)) // 24
    is_val = days % val_every_days == val_every_days - 1
    starts = np.arange(n - span)
    ends = starts + span
    contiguous = hours[ends] - hours[starts] == span * source_dt
    # All states of a blanket in one split: no change of split between its first and last.
    changes = np.concatenate([[0], np.cumsum(is_val[1:] != is_val[:-1])])
    ok = contiguous & (changes[ends] == changes[starts])
    train = starts[ok & ~is_val[starts]]
    val = starts[ok & is_val[starts]]
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(
            f"val_every_days: {val_every_days} leaves {len(train)} training and {len(val)}"
            " validation blankets; use a longer archive or another val_every_days"
        )
    return Split(torch.from_numpy(train), torch.from_numpy(val), stride)


class Batches:
    """Gathers blankets ``(B, K, *S)`` and their dates ``(B, K, 4)`` from start indices."""

    def __init__(self, data: TrainingData, blanket_size: int, stride: int, device: torch.device):
        self.states = torch.from_numpy(np.ascontiguousarray(data.states, dtype=np.float32))
        self.fields = times_to_fields(np.asarray(data.times))
        self.offsets = torch.arange(blanket_size) * stride
        self.device = device

    def __call__(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = starts[:, None] + self.offsets
        return self.states[index].to(self.device), self.fields[index].to(self.device)
