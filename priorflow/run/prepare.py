"""Everything checked before a run starts: model card, backbone, checkpoint, archive, plan.

:func:`prepare_run` takes the validated config (parsed once, its Prefect blocks already
resolved by the caller) and gives a :class:`PreparedRun`. ``priorflow run`` prepares before it
starts a Prefect server (a problem is one line, exit 2, nothing written); ``priorflow plan``
prints the plan; the flow prepares the config it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from priorflow.config import RunConfig
from priorflow.core.devices import cuda_device_count
from priorflow.data.archive import LatentArchive, open_archive
from priorflow.data.synthetic_archive import synthetic_archive_spec
from priorflow.models.appa import card_standardizes
from priorflow.models.card import ModelCard
from priorflow.models.loading import check_model
from priorflow.plan import RunPlan, make_plan, resolve_archive_path
from priorflow.store import check_resume, has_store, store_path
from priorflow.store.layout import check_claimable

#: ``build(path, spec)``: writes the synthetic archive ``spec`` describes (with a progress bar).
ArchiveBuilder = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True)
class PreparedRun:
    """A checked run: its config, the model card and checkpoint, the archive and the plan.

    ``archive`` is the opened archive, or None when the run names none or it is not built yet
    (only with ``require_archive=False``).
    """

    config: RunConfig
    card: ModelCard
    checkpoint: Path
    archive_path: str | None
    archive: LatentArchive | None
    plan: RunPlan

    @property
    def run_dir(self) -> Path:
        return Path(self.plan.run_dir)

    @property
    def resumed(self) -> bool:
        """Whether the run's store exists already (running it resumes it)."""
        return has_store(self.run_dir)


def prepare_run(
    config: RunConfig,
    *,
    require_archive: bool = True,
    build_archive: ArchiveBuilder | None = None,
    gpus_available: int | None = None,
) -> PreparedRun:
    """Check a run and plan it; raise a one-line :class:`~priorflow.errors.PriorflowError`.

    Arguments:
        config: the validated run config.
        require_archive: the run's archive must exist (it is opened and every start date
            checked against it); ``False`` plans without it when it is not built yet.
        build_archive: called to build a missing archive that the model card describes (a
            synthetic world), before it is opened; only at the config's own ``archive`` (a card
            does not decide where the tool writes) and within the size bound of
            :func:`~priorflow.data.synthetic_archive.write_synthetic_archive`.
        gpus_available: CUDA GPUs of a local run (default: detected for backend ``local``).
    """
    model = check_model(config.model_path, config.model_target)  # no weights kept, no code run
    card, checkpoint = model.card, model.checkpoint
    archive_path = resolve_archive_path(config, card)
    missing = archive_path is not None and "://" not in archive_path
    missing = missing and not Path(archive_path).exists()
    # Built only where the user's config says, never where a model card points.
    buildable = missing and build_archive is not None and config.archive is not None
    spec = synthetic_archive_spec(card.metadata) if buildable else None
    if spec is not None:
        build_archive(archive_path, spec)
        missing = False
    archive = None
    if archive_path is not None and (require_archive or not missing):
        archive = open_archive(archive_path, standardize=card_standardizes(card.metadata))
    if gpus_available is None and config.hardware.backend == "local":
        gpus_available = cuda_device_count()
    plan = make_plan(
        config,
        card,
        archive,
        checkpoint_sha256=model.checkpoint_sha256,
        gpus_available=gpus_available,
    )
    return PreparedRun(config, card, checkpoint, archive_path, archive, plan)


def check_resumable(prepared: PreparedRun) -> bool:
    """Check that the run may write its run directory: a new one, or one priorflow made whose
    store this plan would not change.

    Writes nothing. Returns whether the store exists (a resumed run). Raises ConfigError /
    StoreError (one line) otherwise.
    """
    if check_claimable(prepared.run_dir, prepared.plan.run_id) or not prepared.resumed:
        return False
    check_resume(store_path(prepared.run_dir), prepared.plan)
    return True
