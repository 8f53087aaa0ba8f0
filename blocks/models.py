"""Prefect blocks for what a run config names: a model, a latent archive, a cluster profile.

Saved on the Prefect server (created and edited in the UI under Blocks, or in Python with
``PriorModel(model_path=...).save("reference")``), they let a run config name them instead of
paths and hardware settings::

    blocks: {model: reference, archive: synthetic, cluster: my-slurm}

Each block turns itself into config values with :meth:`config_values`; the library's loader
applies them (:func:`priorflow.config.load_config`, called by
:func:`flows.run_config.load_run_config`).
Register the types once per server: ``prefect block register -m blocks``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import AliasChoices, Field

from priorflow.config import Backend
from priorflow.models.card import ModelTarget


class PriorModel(Block):
    """A trained prior model: its directory (``card.yaml`` + checkpoints) and the checkpoint.

    Config values: ``model_path``, ``model_target`` (the fields have the config's names; a block
    saved with the old field name ``target`` loads as ``model_target``).
    """

    _block_type_name: ClassVar[str] = "Prior Model"
    _block_type_slug: ClassVar[str] = "prior-model"
    _description: ClassVar[str] = (
        "A priorflow model directory (card.yaml, model_best.pt, model_last.pt) and which "
        "checkpoint to load. Name it in a run config: blocks: {model: NAME}."
    )

    model_path: str = Field(
        description="The model directory (absolute, or relative to the flow's working directory)."
    )
    #: The run config's name; blocks saved before it was renamed hold ``target``, still read.
    model_target: ModelTarget = Field(
        default="best",
        validation_alias=AliasChoices("model_target", "target"),
        description="The checkpoint: best (model_best.pt) or last.",
    )

    def config_values(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "model_target": self.model_target}


class LatentArchive(Block):
    """A latent archive (zarr store): ground truth, climatology and the run's date range.

    Config values: ``archive``.
    """

    _block_type_name: ClassVar[str] = "Latent Archive"
    _block_type_slug: ClassVar[str] = "latent-archive"
    _description: ClassVar[str] = (
        "A priorflow latent archive (a zarr store with latent(time, ...)). Name it in a run "
        "config: blocks: {archive: NAME}."
    )

    path: str = Field(
        description="The archive's zarr store (absolute, or relative to the working directory)."
    )

    def config_values(self) -> dict[str, Any]:
        return {"archive": self.path}


class ClusterProfile(Block):
    """Where a team's runs go: the scheduler and the resources of one generation job.

    Config values: ``hardware`` (only the fields that are set); the run config's own
    ``hardware`` keys override them.
    """

    _block_type_name: ClassVar[str] = "Cluster Profile"
    _block_type_slug: ClassVar[str] = "cluster-profile"
    _description: ClassVar[str] = (
        "A priorflow cluster profile: batch scheduler, account, partition and the resources "
        "of one generation job. Name it in a run config: blocks: {cluster: NAME}."
    )

    scheduler: Backend = Field(
        default="slurm", description="hardware.backend: slurm, pbs, lsf, local or address."
    )
    address: str | None = Field(
        default=None, description="Dask scheduler address (scheduler: address), tcp://host:8786."
    )
    account: str | None = Field(default=None, description="Account to charge.")
    partition: str | None = Field(default=None, description="Partition / queue of the jobs.")
    cpus: int | None = Field(default=None, ge=1, description="CPU cores per generation job.")
    ram: str | None = Field(default=None, description='Memory per job with a unit: "64GB".')
    time: str | None = Field(default=None, description='Wall time, e.g. "6:00:00".')
    gpus: int | Literal["auto"] | None = Field(
        default=None, description="GPUs per job, or auto (with blankets_per_gpu)."
    )
    blankets_per_gpu: int | None = Field(
        default=None, ge=1, description="Blankets one GPU evaluates (gpus: auto)."
    )
    gpus_per_node: int | None = Field(default=None, ge=0, description="GPUs on one node.")
    max_workers: int | None = Field(default=None, ge=1, description="Most worker jobs at once.")
    interface: str | None = Field(
        default=None, description="Network interface of scheduler and workers (ib0)."
    )
    scheduler_host: str | None = Field(
        default=None, description="Address the Dask scheduler listens on (reachable by nodes)."
    )
    job_prologue: list[str] | None = Field(
        default=None, description="Shell lines run before each worker (module load ...)."
    )
    dashboard_address: str | None = Field(
        default=None, description="Where the Dask dashboard listens (default: loopback)."
    )
    local_directory: str | None = Field(
        default=None, description="Workers' scratch folder (node-local disk)."
    )
    python: str | None = Field(default=None, description="The Python on the compute nodes.")
    job_directives_skip: list[str] | None = Field(
        default=None, description="Drop job-script header lines containing these."
    )
    aggregate_partition: str | None = Field(
        default=None, description="Partition of the aggregation jobs."
    )
    aggregate_cpus: int | None = Field(default=None, ge=1, description="CPUs of an aggregation.")
    aggregate_ram: str | None = Field(default=None, description="Memory of an aggregation.")
    aggregate_time: str | None = Field(default=None, description="Wall time of an aggregation.")
    aggregate_where: Literal["flow", "worker"] | None = Field(
        default=None, description="Aggregate in the flow process (flow) or on a worker."
    )

    _TOP: ClassVar[tuple[str, ...]] = (
        "account",
        "address",
        "gpus_per_node",
        "max_workers",
        "interface",
        "scheduler_host",
        "job_prologue",
        "dashboard_address",
        "local_directory",
        "python",
        "job_directives_skip",
    )
    _GEN: ClassVar[tuple[str, ...]] = (
        "partition",
        "cpus",
        "ram",
        "time",
        "gpus",
        "blankets_per_gpu",
    )

    def hardware(self) -> dict[str, Any]:
        """The ``hardware`` section this profile gives (unset fields left out)."""
        out: dict[str, Any] = {"backend": self.scheduler}
        out |= {key: getattr(self, key) for key in self._TOP if getattr(self, key) is not None}
        gen = {key: getattr(self, key) for key in self._GEN if getattr(self, key) is not None}
        aggregate = {
            key: getattr(self, f"aggregate_{key}")
            for key in ("partition", "cpus", "ram", "time", "where")
            if getattr(self, f"aggregate_{key}") is not None
        }
        if gen:
            out["gen"] = gen
        if aggregate:
            out["aggregate"] = aggregate
        return out

    def config_values(self) -> dict[str, Any]:
        return {"hardware": self.hardware()}


#: ``blocks:`` kind in a run config -> block class.
BLOCK_CLASSES: dict[str, type[Block]] = {
    "model": PriorModel,
    "archive": LatentArchive,
    "cluster": ClusterProfile,
}
