"""Where a process computes: the devices it sees, and how a device says it ran out of memory.

The one device discovery of the project: a job uses every CUDA device its process sees (the
batch system or the local backend restricts them with ``CUDA_VISIBLE_DEVICES``), else the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def cuda_device_count() -> int:
    """Number of CUDA devices this process sees (0 on a CPU-only machine)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_devices() -> list[torch.device]:
    """Every CUDA device this process sees, ``[cuda:0, cuda:1, ...]``, or ``[cpu]``."""
    count = cuda_device_count()
    if count:
        return [torch.device("cuda", i) for i in range(count)]
    return [torch.device("cpu")]


def resolve_devices(devices: Sequence[str | torch.device] | None) -> list[torch.device]:
    """The given devices, or :func:`visible_devices` when none are given."""
    if devices:
        return [torch.device(d) for d in devices]
    return visible_devices()


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device out-of-memory error (CUDA, MPS or a plain allocator failure)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_cached_memory() -> None:
    """Give the CUDA caching allocator's free blocks back (after an out-of-memory error)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
