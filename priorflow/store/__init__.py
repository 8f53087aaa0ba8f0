"""The output store of a run: ``<output_dir>/<run_id>/`` with ``config.yaml``, ``prior.zarr``, ``marks/``.

Life cycle: :func:`create_store` writes the whole schema (no latent chunks) before any job runs,
atomically (:mod:`~priorflow.store.schema`); each job calls :func:`write_member`, which writes only
its own chunk, flushes it, then writes its done mark (:mod:`~priorflow.store.members`);
:func:`aggregate` verifies every mark of a size against the data, member by member, writes the
per-member summaries and consolidates the metadata (:mod:`~priorflow.store.aggregate`).
:mod:`~priorflow.store.export` writes finished runs in other layouts;
:mod:`~priorflow.store.report` describes a size for people.
"""

from priorflow.errors import StoreError
from priorflow.store.aggregate import aggregate
from priorflow.store.layout import (
    CONFIG_NAME,
    MARKS_DIR,
    STORE_NAME,
    has_store,
    mark_path,
    member_names,
    open_group,
    read_store_attrs,
    resolve_group,
    store_path,
)
from priorflow.store.members import (
    is_done,
    missing_jobs,
    read_mark,
    read_marks,
    write_member,
)
from priorflow.store.provenance import run_provenance
from priorflow.store.schema import check_resume, create_store

__all__ = [
    "CONFIG_NAME",
    "MARKS_DIR",
    "STORE_NAME",
    "StoreError",
    "aggregate",
    "check_resume",
    "create_store",
    "has_store",
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
