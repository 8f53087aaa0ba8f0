"""The one device discovery, and what counts as running out of device memory."""

from __future__ import annotations

import torch

from priorflow.core.devices import (
    cuda_device_count,
    is_out_of_memory,
    resolve_devices,
    visible_devices,
)


def test_visible_devices_are_every_cuda_device_or_the_cpu():
    count = cuda_device_count()
    assert count == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    expected = [torch.device("cuda", i) for i in range(count)] or [torch.device("cpu")]
    assert visible_devices() == expected
    assert resolve_devices(None) == expected and resolve_devices([]) == expected
    assert resolve_devices(["cpu", "cpu"]) == [torch.device("cpu")] * 2


def test_out_of_memory_errors():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an allocator's error
