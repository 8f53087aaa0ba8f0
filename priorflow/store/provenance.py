"""Provenance of a run for its store: package versions, host, checkpoint, flow run, start time."""

from __future__ import annotations

import contextlib
import socket
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "priorflow", "torch", "numpy", "xarray", "zarr", "pydantic",
    "prefect", "prefect-dask", "dask", "distributed", "dask-jobqueue",
)  # fmt: skip


def run_provenance(
    checkpoint: str | Path | None = None,
    *,
    flow_run_id: str | None = None,
    start_time: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Provenance to pass to :func:`~priorflow.store.schema.create_store`.

    Arguments:
        checkpoint: the checkpoint file the run samples from (its hash is in the spec).
        flow_run_id: the Prefect flow run id, when there is one.
        start_time: when the run started (default: now, UTC).
        extra: more JSON-able attributes.
    """
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "package_versions": versions,
        "host": socket.gethostname(),
        "flow_run_id": None if flow_run_id is None else str(flow_run_id),
        "start_time": (start_time or datetime.now(UTC)).isoformat(timespec="seconds"),
        **extra,
    }
