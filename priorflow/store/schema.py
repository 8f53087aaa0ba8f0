"""Creating a run's store schema-first, and checking an existing one before a run resumes.

``prior.zarr`` (zarr v3, opened with ``xarray.open_zarr(path, group="72h")``) holds one group per
trajectory size, named by its span ``T0 * dt`` in hours, with

- ``latent(start_date, member, lead, *state_dims)`` float32, one chunk per member
  ``(1, 1, T0, *S)``, NaN until the member is written;
- ``timestamps(start_date, lead, field)`` int64, ``field`` = year, month, day, hour;
- ``seed(start_date, member)`` int64: each job's seed;
- after aggregation, ``member_mean``, ``member_std``, ``member_min``, ``member_max``,
  ``member_finite``, ``member_seconds`` ``(start_date, member)``;
- coordinates ``start_date``, ``member`` (0..M-1), ``lead`` (hours), ``valid_time(start_date, lead)``
  (datetime64, stored as CF ``hours since 1970-01-01``, which ``xarray`` decodes);
- CF attributes on every coordinate and variable (``long_name``, ``units``, ``standard_name``
  where CF has one: ``forecast_reference_time``, ``realization``, ``forecast_period``, ``time``);
- attributes ``Conventions`` (``CF-1.10``), ``states`` (T0), ``dt_hours``, ``span_hours``, ``padded_size``, ``num_blankets``,
  ``stride``, the sampling spec under the run config's key names
  (:meth:`~priorflow.plan.spec.SamplingSpec.attrs`) and the provenance (package versions, host,
  flow run id, start and end time).

The root holds ``Conventions``, the same spec and provenance, plus ``priorflow_schema`` (dates, members, state
shape and dimension names, the groups), ``archive`` (the run's latent archive) and
``standardization``: how that archive's states were standardized for the model (an Appa HDF5
archive: the per-channel ``mean`` and ``std`` and the sha256 of ``stats.pth``; the samples live in
that space, and ``std * z + mean`` undoes it), or null for an archive stored standardized.

Nested records are written flat, one plain attribute per leaf under its dotted key
(``diffusion.num_steps``, ``card.blanket_size``, ``priorflow_schema.version``;
:mod:`~priorflow.store.attributes`), so any zarr or netCDF tool reads them;
:func:`~priorflow.store.layout.read_store_attrs` gives them back nested. Schema 3 (flat
attributes, CF) is not resumed by the priorflow of schema 2, nor the other way round.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.atomic import fsync_path, write_text
from priorflow.config import RunConfig
from priorflow.core.dates import state_times, times_to_fields
from priorflow.errors import ConfigError, StoreError
from priorflow.plan import RunPlan, spec_differences
from priorflow.store.attributes import flat_attrs
from priorflow.store.layout import (
    CONFIG_NAME,
    MARKS_DIR,
    STORE_NAME,
    claim_run_dir,
    consolidate,
    has_store,
    locked,
    read_store_attrs,
    store_path,
    to_json,
)

SCHEMA_VERSION = 3  # 3: flat attributes, CF attributes and time encoding (2: nested attributes)
CONVENTIONS = "CF-1.10"
#: How the time coordinates are stored (CF; every state is on a whole hour).
TIME_ENCODING = {
    "units": "hours since 1970-01-01",
    "calendar": "proleptic_gregorian",
    "dtype": "int64",
}
#: The config key behind each entry of ``priorflow_schema`` (for the message of a resume).
_SCHEMA_KEYS = {
    "start_dates": "start_dates",
    "members": "num_samples_per_date",
    "groups": "trajectory_sizes",
    "state_dims": "the state dimension names (from the archive)",
}


def store_schema(plan: RunPlan) -> dict[str, Any]:
    """The layout a plan gives its store (``priorflow_schema``): dates, members, groups."""
    spec = plan.spec
    return {
        "version": SCHEMA_VERSION,
        "start_dates": [d.isoformat() for d in plan.start_dates],
        "members": plan.members,
        "state_shape": list(spec.state_shape),
        "state_dims": list(plan.state_dims),
        "dt_hours": spec.dt_hours,
        "groups": {
            s.group: {
                "states": s.trajectory_size,
                "padded_size": s.padded_size,
                "num_blankets": s.num_blankets,
            }
            for s in plan.sizes
        },
    }


def _group_dataset(plan: RunPlan, index: int, attrs: dict[str, Any]) -> Any:
    import dask.array as da
    import xarray as xr

    size = plan.sizes[index]
    T0, S, dt = size.trajectory_size, plan.spec.state_shape, plan.spec.dt_hours
    D, M = len(plan.start_dates), plan.members
    starts = np.array([np.datetime64(d, "ns") for d in plan.start_dates])
    valid = np.stack([state_times(d, T0, dt) for d in plan.start_dates])
    stamps = times_to_fields(valid).numpy().astype(np.int64)
    seeds = np.array([[job.seed for job in size.jobs[d * M : (d + 1) * M]] for d in range(D)])
    dims = ("start_date", "member", "lead", *plan.state_dims)
    latent = da.full((D, M, T0, *S), np.nan, dtype=np.float32, chunks=(D, M, T0, *S))
    per_member = ("start_date", "member")
    nan = np.full((D, M), np.nan)
    one = {"units": "1"}  # dimensionless (CF): latent states, seeds
    data_vars = {
        "latent": (dims, latent, {"long_name": "prior trajectories in latent space"} | one),
        "timestamps": (
            ("start_date", "lead", "field"),
            stamps,
            {
                "long_name": "date and hour of each state (year, month, day, hour)",
                "fields": "year month day hour",
            },
        ),
        "seed": (per_member, seeds.astype(np.int64), {"long_name": "the job's seed"} | one),
        "member_mean": (
            per_member,
            nan.copy(),
            {"long_name": "mean of the member's values"} | one,
        ),
        "member_std": (per_member, nan.copy(), {"long_name": "std of the member's values"} | one),
        "member_min": (per_member, nan.copy(), {"long_name": "smallest value"} | one),
        "member_max": (per_member, nan.copy(), {"long_name": "largest value"} | one),
        "member_finite": (per_member, np.zeros((D, M), bool), {"long_name": "all values finite"}),
        "member_seconds": (per_member, nan.copy(), {"long_name": "sampling time", "units": "s"}),
    }
    coords = {
        "start_date": (
            "start_date",
            starts,
            {"standard_name": "forecast_reference_time", "long_name": "start date"},
        ),
        "member": (
            "member",
            np.arange(M, dtype=np.int64),
            {"standard_name": "realization", "long_name": "ensemble member"} | one,
        ),
        "lead": (
            "lead",
            np.arange(T0, dtype=np.int64) * dt,
            {"standard_name": "forecast_period", "long_name": "lead time", "units": "hours"},
        ),
        "valid_time": (
            ("start_date", "lead"),
            valid,
            {"standard_name": "time", "long_name": "valid time of the state"},
        ),
    }
    group_attrs = (
        {"Conventions": CONVENTIONS}
        | attrs
        | {
            "states": T0,
            "dt_hours": dt,
            "span_hours": size.span_hours,
            "padded_size": size.padded_size,
            "num_blankets": size.num_blankets,
            "stride": size.stride,
            "aggregated": False,
            "end_time": None,
        }
    )
    return xr.Dataset(data_vars, coords=coords, attrs=flat_attrs(group_attrs))


def create_store(
    run_dir: str | os.PathLike[str],
    plan: RunPlan,
    config: RunConfig,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Create the run's store schema-first, or check an existing one (a resumed run).

    The run directory must be one priorflow made (:func:`~priorflow.store.layout.claim_run_dir`;
    a new one is made with its marker). Under the run lock: stores half-built by a killed run
    are removed; a new store is built in a temporary folder and renamed into place, then
    ``config.yaml`` (the resolved config) is written beside it; nothing half-made is left on
    error. No latent chunk is written. An existing store is left untouched (bytes included)
    after checking that this plan would write the same schema with the same settings
    (:func:`check_resume`).

    Arguments:
        run_dir: ``<output_dir>/<run_id>`` (usually ``plan.run_dir``).
        plan: the run's plan (:func:`priorflow.plan.make_plan`); its spec is written once into
            the attributes.
        config: the run config (written as ``config.yaml``).
        provenance: more attributes (:func:`~priorflow.store.provenance.run_provenance`).

    Returns:
        The path of ``prior.zarr``.

    Raises:
        ConfigError: the store exists and this plan would change it (names the key).
        StoreError: the path holds something that is not a priorflow store.
    """
    run_dir = Path(run_dir)
    store = store_path(run_dir)
    made = claim_run_dir(run_dir, plan.run_id)
    with locked(run_dir):
        try:
            _remove_partial_stores(run_dir)
            if has_store(run_dir):
                check_resume(store, plan)
                return store
            if store.exists():
                raise StoreError(
                    f"store: {store} exists but is not a zarr store — move it away or use a new"
                    " run_id"
                )
            _create(run_dir, plan, config, provenance)
        except BaseException:
            if made and not has_store(run_dir):  # leave nothing behind (a store: another run's)
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return store


def _create(
    run_dir: Path, plan: RunPlan, config: RunConfig, provenance: dict[str, Any] | None
) -> None:
    """Build the store beside its place, rename it in, then write ``config.yaml`` (under the
    run lock: a concurrent run with another config cannot leave its config behind)."""
    attrs = to_json(
        {"title": "priorflow prior trajectories", "run_id": plan.run_id}
        | plan.spec.attrs()
        | {"archive": plan.archive_path, "standardization": plan.standardization}
        | {"flow_run_id": None, "start_time": None}
        | dict(provenance or {})
    )
    tmp = run_dir / f".{STORE_NAME}.partial-{uuid.uuid4().hex[:8]}"
    try:
        _write_schema(tmp, plan, attrs)
        # Marks without their store refer to data that no longer exists.
        shutil.rmtree(run_dir / MARKS_DIR, ignore_errors=True)
        os.rename(tmp, store_path(run_dir))
        write_text(run_dir / CONFIG_NAME, config.to_yaml())
        fsync_path(run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_partial_stores(run_dir: Path) -> None:
    """Stores half-built by a run that was killed (in this run directory: ours)."""
    for partial in run_dir.glob(f".{STORE_NAME}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _write_schema(path: Path, plan: RunPlan, attrs: dict[str, Any]) -> None:
    """Every group's arrays (no latent chunk), the root attributes, consolidated metadata."""
    import zarr

    for index, size in enumerate(plan.sizes):
        dataset = _group_dataset(plan, index, attrs)
        chunks = (1, 1, size.trajectory_size, *plan.spec.state_shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            dataset.to_zarr(
                str(path),
                group=size.group,
                mode="w-",
                compute=False,
                consolidated=False,
                zarr_format=3,
                encoding={
                    "latent": {"chunks": chunks},
                    "start_date": TIME_ENCODING,
                    "valid_time": TIME_ENCODING,
                },
            )
    root = zarr.open_group(str(path), mode="r+")
    root.attrs.update(
        flat_attrs({"Conventions": CONVENTIONS} | attrs | {"priorflow_schema": store_schema(plan)})
    )
    consolidate(path)


def check_resume(store: Path, plan: RunPlan) -> None:
    """Refuse a plan that would change the store's schema or the settings of its samples.

    Raises:
        ConfigError: naming the first key that differs (``blanket_overlap``,
            ``diffusion.num_steps``, ``card.schedule.sigma_max``, ``start_dates``...).
        StoreError: a store whose arrays do not have the shapes its schema says.
    """
    attrs = read_store_attrs(store)
    if attrs["priorflow_schema"].get("version") != SCHEMA_VERSION:
        raise StoreError(
            f"store: {store} has schema version {attrs['priorflow_schema'].get('version')}, this"
            f" priorflow writes {SCHEMA_VERSION} — finish it with the priorflow that made it, or"
            " use a new run_id"
        )
    changes = spec_differences(attrs, plan.spec)
    schema = to_json(store_schema(plan))
    changes += [
        (_SCHEMA_KEYS[key], attrs["priorflow_schema"].get(key), schema[key])
        for key in _SCHEMA_KEYS
        if attrs["priorflow_schema"].get(key) != schema[key]
    ]
    if changes:
        key, old, new = changes[0]
        raise ConfigError(
            f"run_id {plan.run_id!r}: {store} was made with {key} = {_show(old)}, this config"
            f" gives {_show(new)} — resuming would mix two runs; use a new run_id or the original"
            " settings"
        )
    _check_arrays(store, plan)


def _check_arrays(store: Path, plan: RunPlan) -> None:
    import zarr

    D, M = len(plan.start_dates), plan.members
    for size in plan.sizes:
        expected = (D, M, size.trajectory_size, *plan.spec.state_shape)
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


def _show(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)
