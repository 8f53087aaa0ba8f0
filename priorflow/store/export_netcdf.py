"""Export a finished run as netCDF: one CF file per trajectory size, ``<out>/<group>/prior.nc``.

The file holds the group as ``xarray.open_zarr(store, group=...)`` shows it: ``latent(start_date,
member, lead, *state dims)`` float32 (chunked one member at a time), ``timestamps``, ``seed``, the
per-member summaries, the coordinates with their CF attributes (``valid_time`` and
``start_date`` as ``hours since 1970-01-01``) and the group's attributes, flat
(:func:`~priorflow.store.attributes.netcdf_attrs`: netCDF has no null, so unset settings are
absent), with ``Conventions`` and a ``history`` line. It opens with ``netCDF4.Dataset`` and with
``xarray.open_dataset``.

Members are read one at a time, each checked against its done mark before it is written (so
memory does not grow with the number of members); the file is built under a temporary name
beside its place and renamed in only when every member was good.

Needs the ``netCDF4`` package (``pip install 'priorflow[netcdf]'``).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.atomic import fsync_path
from priorflow.errors import ConfigError
from priorflow.store.attributes import netcdf_attrs
from priorflow.store.export import export_groups, write_failed
from priorflow.store.integrity import MemberProblem, iter_members, refuse_damage
from priorflow.store.layout import store_path
from priorflow.store.schema import TIME_ENCODING

__all__ = ["NETCDF_NAME", "export_netcdf"]

NETCDF_NAME = "prior.nc"
#: The time coordinates, stored as the zarr store stores them.
_TIMES = ("start_date", "valid_time")


def export_netcdf(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    size: int | str | None = None,
) -> list[Path]:
    """Write ``<out>/<group>/prior.nc`` per trajectory size (see the module docstring).

    Arguments:
        run_dir: the run directory (``<output_dir>/<run_id>``).
        out: where to write (default ``<run_dir>/export``).
        size: one size only (``72`` or ``"72h"``); default every size.

    Returns:
        The written files, size by size.

    Raises:
        ConfigError: the netCDF4 package is not installed, or ``size`` is not a size of the run.
        StoreError: the run does not exist, a size has members that are not done or whose data
            does not match their done marks (named), or a file cannot be written (one line;
            nothing half-written).
    """
    netcdf4 = _netcdf4()
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    return [
        _write_group(netcdf4, run_dir, group, out / group / NETCDF_NAME)
        for group in export_groups(run_dir, size)
    ]


def _netcdf4() -> Any:
    try:
        import netCDF4
    except ImportError:
        raise ConfigError(
            "--format: netcdf needs the netCDF4 package — pip install 'priorflow[netcdf]'"
        ) from None
    return netCDF4


def _write_group(netcdf4: Any, run_dir: Path, group: str, path: Path) -> Path:
    """Build the file of one group beside ``path``, every member verified, and rename it in."""
    made = [folder for folder in (path.parent.parent, path.parent) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        problems = _fill(netcdf4, run_dir, group, tmp)
        refuse_damage(problems, f"export of {run_dir}")
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except (OSError, RuntimeError) as error:  # netCDF4 reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        raise write_failed(path, error, made) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return path


def _fill(netcdf4: Any, run_dir: Path, group: str, tmp: Path) -> list[MemberProblem]:
    """Write everything but ``latent`` with xarray, then ``latent`` member by member; return the
    members that failed their check (not written)."""
    import xarray as xr

    store = store_path(run_dir)
    dataset = xr.open_zarr(str(store), group=group)
    latent = dataset["latent"]
    rest = dataset.drop_vars("latent")
    for name, variable in rest.variables.items():
        variable.encoding = dict(TIME_ENCODING) if name in _TIMES else {}
    history = (
        f"{datetime.now(UTC).isoformat(timespec='seconds')}: priorflow export --format netcdf"
        f" of {store} group {group}"
    )
    rest.attrs = netcdf_attrs(dataset.attrs) | {"history": history}
    rest.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")

    problems = []
    with netcdf4.Dataset(tmp, "a") as nc:
        for dim, length in zip(latent.dims, latent.shape, strict=True):
            if dim not in nc.dimensions:
                nc.createDimension(dim, length)
        variable = nc.createVariable(
            "latent",
            "f4",
            latent.dims,
            chunksizes=(1, 1, *latent.shape[2:]),
            fill_value=np.float32(np.nan),
        )
        variable.setncatts(netcdf_attrs(latent.attrs))
        for d, m, name, values, problem in iter_members(run_dir, group):  # one at a time
            if problem is not None:
                problems.append(MemberProblem(group, name, problem))
                continue
            variable[d, m] = values
    return problems
