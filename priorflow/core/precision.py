"""Precision of the backbone: float32, or float16 / bfloat16 autocast.

Only the backbone runs in reduced precision. The sampler state, the noise levels and every
coefficient stay in float32 (float64 for coefficients computed once), and torch's global default
dtype is never changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal, get_args

import torch

Precision = Literal["float32", "float16", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_precision(requested: str | None, trained: str) -> Precision:
    """The precision to sample in: ``requested``, or the model's training precision when ``None``."""
    value = trained if requested in (None, "null", "none") else requested
    if value not in PRECISIONS:
        raise ValueError(
            f"{value!r} is not a precision; choose {', '.join(PRECISIONS)} or None (the model's"
            " training precision)"
        )
    return value  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast context for the backbone on ``device``; a no-op for float32."""
    if precision == "float32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision]):
        yield
