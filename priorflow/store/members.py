"""One member's data in the store and its done mark: written, read back, listed.

A job writes only its own chunk (:func:`write_member`), flushes it, then writes its done mark
``marks/<group>/<job name>.json`` atomically, holding the sha256 of the written bytes and the
job's record. Marks are the source of truth for resuming: :func:`missing_jobs` lists the jobs
without one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.atomic import fsync_path, write_text
from priorflow.errors import StoreError
from priorflow.plan import Job, RunPlan
from priorflow.store.layout import MARKS_DIR, has_store, mark_path, store_path, to_json


def _as_array(latent: Any) -> np.ndarray:
    if hasattr(latent, "detach"):  # a torch tensor
        latent = latent.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(latent, dtype="<f4"))


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def member_stats(array: np.ndarray) -> dict[str, Any]:
    values = array.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "finite": bool(np.isfinite(values).all()),
        }


def write_member(
    run_dir: str | os.PathLike[str], job: Job, latent: Any, record: dict[str, Any]
) -> dict[str, Any]:
    """Write one job's trajectory into its own chunk, flush it, then write its done mark.

    Arguments:
        run_dir: the run directory (its store made by :func:`create_store`).
        job: the job (its group, ``date_index``, ``member`` and ``seed`` locate and check it).
        latent: ``(T0, *S)`` float32 tensor or array (``Trajectory.latent``).
        record: the job's small record (``Trajectory.record`` plus e.g. ``host``); JSON-able
            values (numpy scalars, devices and datetimes are converted).

    Returns:
        The mark written to ``marks/<group>/<job name>.json``: ``name``, ``group``, ``size``,
        ``start_date``, ``date_index``, ``member``, ``seed``, ``sha256`` (of the float32 bytes),
        ``shape``, ``mean``, ``std``, ``min``, ``max``, ``finite`` and ``record``.
    """
    import zarr

    run_dir = Path(run_dir)
    store = store_path(run_dir)
    if not has_store(run_dir):
        raise StoreError(f"store: {store} does not exist — create_store() runs before the jobs")
    array = _as_array(latent)
    try:
        target = zarr.open_array(str(store), path=f"{job.group}/latent", mode="r+")
        seeds = zarr.open_array(str(store), path=f"{job.group}/seed", mode="r")
    except Exception:
        raise StoreError(
            f"store: {store} has no group {job.group} — the job is not of this run"
        ) from None
    expected = tuple(target.shape[2:])
    if array.shape != expected:
        raise ValueError(
            f"{job.name}: latent has shape {array.shape}, the store expects {expected}"
        )
    d, m = job.date_index, job.member
    if not (0 <= d < target.shape[0] and 0 <= m < target.shape[1]) or int(seeds[d, m]) != job.seed:
        raise StoreError(
            f"{job.name}: the store has no member {m} of date {d} with seed {job.seed} — the job"
            " is not of this run"
        )
    target[d, m] = array
    chunk = (
        store
        / job.group
        / "latent"
        / target.metadata.encode_chunk_key((d, m, *([0] * len(expected))))
    )
    fsync_path(chunk)
    mark = {
        "name": job.name,
        "group": job.group,
        "size": job.size,
        "start_date": job.start.isoformat(),
        "date_index": d,
        "member": m,
        "seed": job.seed,
        "sha256": digest(array),
        "shape": list(array.shape),
        **member_stats(array),
        "record": to_json(dict(record)),
    }
    write_text(mark_path(run_dir, job), json.dumps(mark, sort_keys=True, indent=1))
    return mark


def read_mark(run_dir: str | os.PathLike[str], job: Job) -> dict[str, Any] | None:
    """The job's done mark, or ``None`` when there is none (or it is for another job/seed)."""
    try:
        mark = json.loads(mark_path(run_dir, job).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(mark, dict) or mark.get("seed") != job.seed or mark.get("name") != job.name:
        return None
    return mark


def is_done(run_dir: str | os.PathLike[str], job: Job) -> bool:
    """Whether ``job`` has a valid done mark (its data was written and flushed before it)."""
    return read_mark(run_dir, job) is not None


def missing_jobs(run_dir: str | os.PathLike[str], plan: RunPlan) -> list[Job]:
    """The jobs of ``plan`` without a done mark, in plan order."""
    return [job for job in plan.jobs if not is_done(run_dir, job)]


def read_marks(run_dir: str | os.PathLike[str], group: str | None = None) -> list[dict[str, Any]]:
    """Every done mark (of one group, or all), sorted by group, date and member."""
    root = Path(run_dir) / MARKS_DIR
    pattern = f"{group}/*.json" if group else "*/*.json"
    marks = []
    for path in root.glob(pattern):
        with contextlib.suppress(OSError, ValueError):
            marks.append(json.loads(path.read_bytes()))
    return sorted(
        marks, key=lambda m: (m.get("size", 0), m.get("date_index", 0), m.get("member", 0))
    )
