"""Everything checked before a run starts: config, model card, checkpoint, archive, plan.

Shared by ``priorflow run`` (which checks before it starts a Prefect server) and the flow (which
checks again, as a deployment or a schedule may start it). Prefect only to read the blocks a
config names (:mod:`blocks.resolve`), imported when a config is resolved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from priorflow.config import RunConfig, load_config
from priorflow.models.loading import ModelCard, checkpoint_path, read_card
from priorflow.plan import RunPlan, make_plan, resolve_archive_path


@dataclass(frozen=True)
class PreparedRun:
    """A validated run: its config, the model card and checkpoint, the archive and the plan."""

    config: RunConfig
    card: ModelCard
    checkpoint: Path
    archive_path: str | None
    plan: RunPlan

    @property
    def run_dir(self) -> Path:
        return Path(self.plan.run_dir)


def config_items(overrides: Iterable[str] | None, run_id: str | None) -> list[str]:
    """``--set`` items plus ``run_id`` (quoted, so that ``--run-id 2024`` stays a string)."""
    items = list(overrides or ())
    if run_id:
        items.append(f"run_id={json.dumps(str(run_id))}")
    return items


def resolve_config(
    config_path: str | os.PathLike[str],
    overrides: Iterable[str] | None = None,
    run_id: str | None = None,
) -> RunConfig:
    """:func:`priorflow.config.load_config` with ``run_id`` applied as an override.

    Prefect blocks the config names (``blocks:``) are read from the Prefect server
    (:func:`blocks.resolve.resolve_block`); the core gets their plain values.
    """
    return load_config(config_path, config_items(overrides, run_id), resolve_block=block_values)


def block_values(kind: str, name: str) -> dict[str, Any]:
    """:func:`blocks.resolve.resolve_block`, imported (with Prefect) only when a config names a
    block."""
    from blocks.resolve import resolve_block

    return resolve_block(kind, name)


def prepare_run(
    config_path: str | os.PathLike[str],
    overrides: Iterable[str] | None = None,
    run_id: str | None = None,
    *,
    check_archive: bool = True,
    gpus_available: int | None = None,
) -> PreparedRun:
    """Validate a run and plan it; raise a one-line :class:`PriorflowError` on any problem.

    Arguments:
        config_path, overrides, run_id: the run config, ``--set`` items and the run's name
            (default: the config's ``run_id``, else a fresh timestamped one).
        check_archive: open the archive and check that it covers every start date (it must
            exist); ``False`` only plans (for a caller that builds a missing archive first).
        gpus_available: CUDA GPUs of a local run (default: detected for backend ``local``).
    """
    from flows.runners import check_backend
    from priorflow.data.archive import open_archive

    config = resolve_config(config_path, overrides, run_id)
    check_backend(config.hardware.backend)
    card = read_card(config.model_path)
    checkpoint = checkpoint_path(config.model_path, config.model_target)
    archive_path = resolve_archive_path(config, card)
    archive: Any = None
    if check_archive and archive_path is not None:
        archive = open_archive(archive_path)
    if gpus_available is None and config.hardware.backend == "local":
        from flows.runners import cuda_gpu_count

        gpus_available = cuda_gpu_count()
    plan = make_plan(config, card, archive, gpus_available=gpus_available)
    return PreparedRun(config, card, checkpoint, archive_path, plan)


def check_resume(prepared: PreparedRun) -> bool:
    """If the run's store exists (a resumed run), check that this config would not change it.

    Writes nothing (:func:`priorflow.store.create_store` only checks an existing store).
    Returns whether the store exists. Raises ConfigError / StoreError (one line) on a mismatch.
    """
    from priorflow.models.loading import file_sha256
    from priorflow.store import create_store, store_path

    if not (store_path(prepared.run_dir) / "zarr.json").exists():
        return False
    provenance = {"checkpoint_sha256": file_sha256(prepared.checkpoint)}
    create_store(prepared.run_dir, prepared.plan, prepared.config, prepared.card, provenance)
    return True
