"""The output store of a run: ``<output_dir>/<run_id>/`` with ``config.yaml``, ``prior.zarr``, ``marks/``.

``prior.zarr`` (zarr v3, opened with ``xarray.open_zarr(path, group="72h")``) holds one group per
trajectory size, named by its span ``T0 * dt`` in hours, with

- ``latent(start_date, member, lead, *state_dims)`` float32, one chunk per member
  ``(1, 1, T0, *S)``, NaN until the member is written;
- ``timestamps(start_date, lead, field)`` int64, ``field`` = year, month, day, hour;
- ``seed(start_date, member)`` int64: each job's seed;
- after aggregation, ``member_mean``, ``member_std``, ``member_min``, ``member_max``,
  ``member_finite``, ``member_seconds`` ``(start_date, member)``;
- coordinates ``start_date``, ``member`` (0..M-1), ``lead`` (hours), ``valid_time(start_date, lead)``;
- attributes ``states`` (T0), ``dt_hours``, ``span_hours``, ``padded_size``, ``num_blankets`` and
  the run's provenance (model path, card, checkpoint sha256, sampler and config, steps, overlap,
  blanket size, fold mode, precision, run seed, package versions, flow run id, start and end time).

Life cycle: :func:`create_store` writes the whole schema (no latent chunks) before any job runs,
atomically; each job calls :func:`write_member`, which writes only its own chunk, flushes it, then
writes its done mark ``marks/<group>/<job name>.json`` (atomically, holding the sha256 of the
written bytes and the job's record). Marks are the source of truth for resuming:
:func:`missing_jobs` lists the jobs without one. :func:`aggregate` verifies every mark of a size
against the data, member by member (memory does not grow with the number of members), writes the
per-member summaries and consolidates the metadata; rerunning it with unchanged marks writes
nothing, so rerunning a finished run leaves every byte as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.config import RunConfig
from priorflow.core.dates import state_times, times_to_fields
from priorflow.errors import ConfigError, PriorflowError
from priorflow.models.loading import ModelCard
from priorflow.plan import Job, RunPlan, job_name

__all__ = [
    "CONFIG_NAME",
    "MARKS_DIR",
    "STORE_NAME",
    "StoreError",
    "aggregate",
    "create_store",
    "is_done",
    "mark_path",
    "member_names",
    "missing_jobs",
    "open_group",
    "read_mark",
    "read_marks",
    "read_store_attrs",
    "resolve_group",
    "run_provenance",
    "store_path",
    "write_member",
]

STORE_NAME = "prior.zarr"
CONFIG_NAME = "config.yaml"
MARKS_DIR = "marks"
LOCK_NAME = ".lock"
SCHEMA_VERSION = 1
SUMMARIES = ("mean", "std", "min", "max", "finite", "seconds")
PACKAGES = (
    "priorflow", "torch", "numpy", "xarray", "zarr", "pydantic",
    "prefect", "prefect-dask", "dask", "distributed", "dask-jobqueue",
)  # fmt: skip

# Which config key a stored setting comes from (for the message when a resume would change it).
_LABELS = {
    "start_dates": "start_dates",
    "members": "num_samples_per_date",
    "groups": "trajectory_sizes",
    "state_shape": "the model's state_shape",
    "state_dims": "the state dimension names (from the archive)",
    "dt_hours": "the model's dt_hours",
    "model_path": "model_path",
    "model_target": "model_target",
    "checkpoint_sha256": "the model checkpoint (sha256)",
    "sampler": "diffusion.sampler.type",
    "sampler_config": "diffusion.sampler.config",
    "steps": "diffusion.num_steps",
    "overlap": "blanket_overlap",
    "fold": "fold_mode",
    "precision": "precision",
    "seed": "seed",
    "blanket_size": "the model's blanket_size",
}


class StoreError(PriorflowError):
    """A run store that is missing, incomplete, or does not match its done marks."""


def store_path(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>/prior.zarr``."""
    return Path(run_dir) / STORE_NAME


def mark_path(run_dir: str | os.PathLike[str], job: Job) -> Path:
    """``<run_dir>/marks/<group>/<job name>.json``: the job's done mark."""
    return Path(run_dir) / MARKS_DIR / job.group / f"{job.name}.json"


def run_provenance(
    model: Any = None,
    *,
    flow_run_id: str | None = None,
    start_time: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Provenance to pass to :func:`create_store`: versions, host, start time, checkpoint.

    Arguments:
        model: a loaded :class:`priorflow.models.loading.Model` (its checkpoint path and sha256), or None.
        flow_run_id: the Prefect flow run id, when there is one.
        start_time: when the run started (default: now, UTC).
        extra: more JSON-able attributes.
    """
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    checkpoint = getattr(model, "checkpoint", None)
    return {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": getattr(model, "checkpoint_sha256", None),
        "package_versions": versions,
        "host": socket.gethostname(),
        "flow_run_id": None if flow_run_id is None else str(flow_run_id),
        "start_time": (start_time or datetime.now(UTC)).isoformat(timespec="seconds"),
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# Small file helpers


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent)


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``<run_dir>/.lock`` (metadata updates by concurrent aggregations)."""
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _consolidate(store: Path) -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(store))


def _json(value: Any) -> Any:
    """Make ``value`` JSON-able: numpy scalars, tensors' items, paths, datetimes, devices."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _json(value.item())
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _json(value.item())
    return str(value)


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------
# Schema


def _schema(plan: RunPlan) -> dict[str, Any]:
    return {
        "version": SCHEMA_VERSION,
        "start_dates": [d.isoformat() for d in plan.start_dates],
        "members": plan.members,
        "state_shape": list(plan.state_shape),
        "state_dims": list(plan.state_dims),
        "dt_hours": plan.dt_hours,
        "groups": {
            s.group: {
                "states": s.trajectory_size,
                "padded_size": s.padded_size,
                "num_blankets": s.num_blankets,
            }
            for s in plan.sizes
        },
    }


def _settings(plan: RunPlan, provenance: dict[str, Any]) -> dict[str, Any]:
    return _json(plan.settings() | {"checkpoint_sha256": provenance.get("checkpoint_sha256")})


def _group_dataset(plan: RunPlan, index: int, attrs: dict[str, Any]) -> Any:
    import dask.array as da
    import xarray as xr

    size = plan.sizes[index]
    T0, S = size.trajectory_size, plan.state_shape
    D, M = len(plan.start_dates), plan.members
    starts = np.array([np.datetime64(d, "ns") for d in plan.start_dates])
    valid = np.stack([state_times(d, T0, plan.dt_hours) for d in plan.start_dates])
    stamps = times_to_fields(valid).numpy().astype(np.int64)
    seeds = np.array([[job.seed for job in size.jobs[d * M : (d + 1) * M]] for d in range(D)])
    dims = ("start_date", "member", "lead", *plan.state_dims)
    latent = da.full((D, M, T0, *S), np.nan, dtype=np.float32, chunks=(D, M, T0, *S))
    per_member = ("start_date", "member")
    nan = np.full((D, M), np.nan)
    data_vars = {
        "latent": (dims, latent, {"long_name": "prior trajectories in latent space"}),
        "timestamps": (
            ("start_date", "lead", "field"),
            stamps,
            {"fields": "year month day hour", "long_name": "date and hour of each state"},
        ),
        "seed": (per_member, seeds.astype(np.int64), {"long_name": "the job's seed"}),
        "member_mean": (per_member, nan.copy(), {"long_name": "mean of the member's values"}),
        "member_std": (per_member, nan.copy(), {"long_name": "std of the member's values"}),
        "member_min": (per_member, nan.copy(), {"long_name": "smallest value"}),
        "member_max": (per_member, nan.copy(), {"long_name": "largest value"}),
        "member_finite": (per_member, np.zeros((D, M), bool), {"long_name": "all values finite"}),
        "member_seconds": (per_member, nan.copy(), {"long_name": "sampling time", "units": "s"}),
    }
    coords = {
        "start_date": ("start_date", starts),
        "member": ("member", np.arange(M, dtype=np.int64)),
        "lead": ("lead", np.arange(T0, dtype=np.int64) * plan.dt_hours, {"units": "hours"}),
        "valid_time": (("start_date", "lead"), valid),
    }
    group_attrs = attrs | {
        "states": T0,
        "dt_hours": plan.dt_hours,
        "span_hours": size.span_hours,
        "padded_size": size.padded_size,
        "num_blankets": size.num_blankets,
        "stride": size.stride,
        "aggregated": False,
        "end_time": None,
    }
    return xr.Dataset(data_vars, coords=coords, attrs=group_attrs)


def create_store(
    run_dir: str | os.PathLike[str],
    plan: RunPlan,
    config: RunConfig,
    card: ModelCard,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Create the run's store schema-first, or check an existing one (a resumed run).

    A new store is built in a temporary folder and renamed into place, and ``config.yaml`` (the
    resolved config) is written beside it: nothing half-made is left on error. No latent chunk
    is written. An existing store is left untouched (bytes included) after checking that this
    plan would write the same schema with the same settings.

    Arguments:
        run_dir: ``<output_dir>/<run_id>`` (usually ``plan.run_dir``).
        plan: the run's plan (:func:`priorflow.plan.make_plan`).
        config: the run config (written as ``config.yaml``).
        card: the model card (stored in the attributes).
        provenance: more attributes (:func:`run_provenance`: checkpoint sha256, package
            versions, flow run id, start time...).

    Returns:
        The path of ``prior.zarr``.

    Raises:
        ConfigError: the store exists and this config would change it (names the key).
        StoreError: the path holds something that is not a priorflow store.
    """
    run_dir = Path(run_dir)
    store = store_path(run_dir)
    provenance = _json(dict(provenance or {}))
    if (store / "zarr.json").exists():
        _check_existing(store, plan, provenance)
        return store
    if store.exists():
        raise StoreError(
            f"store: {store} exists but is not a zarr store — move it away or use a new run_id"
        )
    card = getattr(card, "card", card)
    attrs = _json(
        {
            "title": "priorflow prior trajectories",
            "run_id": plan.run_id,
            "model_path": plan.model_path,
            "model_target": plan.model_target,
            "card": card.model_dump(mode="json"),
            "sampler": plan.sampler,
            "sampler_config": plan.sampler_config,
            "steps": plan.steps,
            "overlap": plan.overlap,
            "blanket_size": plan.blanket_size,
            "fold_mode": plan.fold,
            "precision": plan.precision,
            "run_seed": plan.seed,
            "checkpoint_sha256": None,
            "flow_run_id": None,
            "start_time": None,
        }
        | provenance
    )
    new_dir = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STORE_NAME}.partial-{uuid.uuid4().hex[:8]}"
    try:
        import zarr

        for index, size in enumerate(plan.sizes):
            dataset = _group_dataset(plan, index, attrs)
            chunks = (1, 1, size.trajectory_size, *plan.state_shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                dataset.to_zarr(
                    str(tmp),
                    group=size.group,
                    mode="w-",
                    compute=False,
                    consolidated=False,
                    zarr_format=3,
                    encoding={"latent": {"chunks": chunks}},
                )
        root = zarr.open_group(str(tmp), mode="r+")
        root.attrs.update(
            attrs
            | {
                "priorflow_schema": _schema(plan),
                "priorflow_settings": _settings(plan, provenance),
            }
        )
        _consolidate(tmp)
        _atomic_write(run_dir / CONFIG_NAME, config.to_yaml().encode())
        # Marks without their store refer to data that no longer exists.
        shutil.rmtree(run_dir / MARKS_DIR, ignore_errors=True)
        try:
            os.rename(tmp, store)
        except OSError:
            if (store / "zarr.json").exists():  # another process made it first
                _check_existing(store, plan, provenance)
                return store
            raise
        _fsync(run_dir)
    except BaseException:
        if new_dir:  # leave nothing behind
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                (run_dir / CONFIG_NAME).unlink(missing_ok=True)
                run_dir.rmdir()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return store


def read_store_attrs(store: Path) -> dict[str, Any]:
    """The root attributes of ``prior.zarr`` (``priorflow_schema``, ``priorflow_settings``, ...)."""
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


def _check_existing(store: Path, plan: RunPlan, provenance: dict[str, Any]) -> None:
    """Refuse a plan that would change the store's schema or the settings of its samples."""
    import zarr

    attrs = read_store_attrs(store)
    old = {**attrs.get("priorflow_settings", {}), **attrs["priorflow_schema"]}
    new = {**_settings(plan, provenance), **_json(_schema(plan))}  # settings first: clearer
    same_checkpoint = old.get("checkpoint_sha256") and new.get("checkpoint_sha256")
    for key, value in new.items():
        if key == "checkpoint_sha256" and not same_checkpoint:
            continue  # compared only when both runs know it
        if key == "model_path" and same_checkpoint:
            continue  # a moved model directory is the same model
        if old.get(key) != value:
            raise ConfigError(
                f"run_id {plan.run_id!r}: {store} was made with {_LABELS.get(key, key)} ="
                f" {_show(old.get(key))}, this config gives {_show(value)} — resuming would mix"
                " two runs; use a new run_id or the original settings"
            )
    D, M = len(plan.start_dates), plan.members
    for size in plan.sizes:
        expected = (D, M, size.trajectory_size, *plan.state_shape)
        try:
            latent = zarr.open_array(str(store), path=f"{size.group}/latent", mode="r")
        except Exception:
            raise StoreError(
                f"store: {store} has no {size.group}/latent — the store is damaged; use a new run_id"
            ) from None
        chunks = (1, 1, *expected[2:])
        if tuple(latent.shape) != expected or tuple(latent.chunks) != chunks:
            raise StoreError(
                f"store: {store}/{size.group}/latent has shape {tuple(latent.shape)} and chunks"
                f" {tuple(latent.chunks)}, expected {expected} and {chunks} — use a new run_id"
            )


# ---------------------------------------------------------------------------------------------
# Members


def _as_array(latent: Any) -> np.ndarray:
    if hasattr(latent, "detach"):  # a torch tensor
        latent = latent.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(latent, dtype="<f4"))


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def _member_stats(array: np.ndarray) -> dict[str, Any]:
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
    if not (store / "zarr.json").exists():
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
    _fsync(chunk)
    mark = {
        "name": job.name,
        "group": job.group,
        "size": job.size,
        "start_date": job.start.isoformat(),
        "date_index": d,
        "member": m,
        "seed": job.seed,
        "sha256": _digest(array),
        "shape": list(array.shape),
        **_member_stats(array),
        "record": _json(dict(record)),
    }
    _atomic_write(mark_path(run_dir, job), json.dumps(mark, sort_keys=True, indent=1).encode())
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


# ---------------------------------------------------------------------------------------------
# Aggregation


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


def aggregate(run_dir: str | os.PathLike[str], size: int | str) -> dict[str, Any]:
    """Verify, summarise and consolidate one trajectory size (``72`` or ``"72h"``).

    Every member must have its done mark, and the data must hash to the mark's sha256 (read one
    member at a time). Writes ``member_mean/std/min/max/finite/seconds``, the group attributes
    ``aggregated``, ``end_time``, ``summary`` and ``marks_sha256``, and consolidates the
    metadata. When the marks are unchanged since the last aggregation nothing is written.

    Returns:
        ``{"group", "states", "members", "mean", "std", "min", "max", "non_finite" (job names),
        "seconds" (sum over members), "store", "end_time", "unchanged" (bool)}``.

    Raises:
        StoreError: missing members (named) or data that does not match its mark.
    """
    import zarr

    run_dir = Path(run_dir)
    store = store_path(run_dir)
    if not (store / "zarr.json").exists():
        raise StoreError(f"store: {store} does not exist")
    attrs = read_store_attrs(store)
    group, info = resolve_group(attrs, size)
    names = member_names(attrs["priorflow_schema"], group)
    D, M = len(names), len(names[0]) if names else 0
    marks_dir = run_dir / MARKS_DIR / group
    with _locked(run_dir):
        raw: dict[str, bytes] = {}
        missing = []
        for row in names:
            for name in row:
                try:
                    raw[name] = (marks_dir / f"{name}.json").read_bytes()
                except OSError:
                    missing.append(name)
        if missing:
            shown = ", ".join(missing[:4]) + (
                f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            )
            raise StoreError(
                f"{group}: {len(missing)} of {D * M} members are not done ({shown}) — run again"
                " with the same run_id to generate them"
            )
        digest = hashlib.sha256()
        for name in sorted(raw):
            digest.update(name.encode() + b"\0" + raw[name] + b"\0")
        marks_sha256 = digest.hexdigest()
        node = zarr.open_group(str(store), path=group, mode="r+")
        previous = node.attrs.asdict()
        if previous.get("aggregated") and previous.get("marks_sha256") == marks_sha256:
            return dict(previous["summary"], unchanged=True)

        latent = node["latent"]
        seeds = node["seed"][...]
        table = {key: np.full((D, M), np.nan) for key in SUMMARIES}
        table["finite"] = np.zeros((D, M), bool)
        total = {"n": 0, "sum": 0.0, "sumsq": 0.0, "min": math.inf, "max": -math.inf}
        non_finite = []
        for d in range(D):
            for m in range(M):
                name = names[d][m]
                try:
                    mark = json.loads(raw[name])
                except ValueError:
                    raise StoreError(
                        f"{name}: its done mark is not valid JSON — delete it and run again"
                    ) from None
                if mark.get("seed") != int(seeds[d, m]):
                    raise StoreError(
                        f"{name}: its done mark has seed {mark.get('seed')}, the store {int(seeds[d, m])}"
                        f" — delete {marks_dir / (name + '.json')} and run again"
                    )
                values = np.asarray(latent[d, m], dtype="<f4")
                if _digest(values) != mark.get("sha256"):
                    raise StoreError(
                        f"{name}: the data in the store does not match its done mark (sha256) —"
                        f" delete {marks_dir / (name + '.json')} and run again to regenerate it"
                    )
                stats = _member_stats(values)
                for key in ("mean", "std", "min", "max", "finite"):
                    table[key][d, m] = stats[key]
                seconds = (mark.get("record") or {}).get("seconds")
                if isinstance(seconds, int | float):
                    table["seconds"][d, m] = seconds
                if stats["finite"]:
                    v = values.astype(np.float64)
                    total["n"] += v.size
                    total["sum"] += float(v.sum())
                    total["sumsq"] += float((v * v).sum())
                    total["min"] = min(total["min"], stats["min"])
                    total["max"] = max(total["max"], stats["max"])
                else:
                    non_finite.append(name)
                del values
        for key in SUMMARIES:
            node[f"member_{key}"][...] = table[key]
        n = total["n"]
        mean = total["sum"] / n if n else math.nan
        std = math.sqrt(max(total["sumsq"] / n - mean * mean, 0.0)) if n else math.nan
        end_time = datetime.now(UTC).isoformat(timespec="seconds")
        summary = _json(
            {
                "group": group,
                "states": info["states"],
                "members": D * M,
                "mean": mean,
                "std": std,
                "min": total["min"] if n else math.nan,
                "max": total["max"] if n else math.nan,
                "non_finite": non_finite,
                "seconds": float(np.nansum(table["seconds"])),
                "store": str(store),
                "end_time": end_time,
            }
        )
        node.attrs.update(
            {
                "aggregated": True,
                "end_time": end_time,
                "marks_sha256": marks_sha256,
                "summary": summary,
            }
        )
        _consolidate(store)
    return dict(summary, unchanged=False)


def open_group(run_dir: str | os.PathLike[str], size: int | str) -> Any:
    """The group of one size as a lazy ``xarray.Dataset`` (``size``: 72 or ``"72h"``)."""
    import xarray as xr

    store = store_path(run_dir)
    group, _ = resolve_group(read_store_attrs(store), size)
    return xr.open_zarr(str(store), group=group)
