r"""Planning a run: the config and the model card in, a checked :class:`RunPlan` out.

Everything is checked here, before anything is written or submitted: the overlap against the
model's blanket size, the archive's state shape and dates, the GPUs of a job. Every job samples
one trajectory with its own seed (:func:`priorflow.core.seeds.job_seed`).

``gpus: auto`` gives a job :math:`\lceil N / \text{blankets\_per\_gpu} \rceil` GPUs, capped by
``hardware.gpus_per_node`` and by ``gpus_available`` (the GPUs a local run can see; 0 on a
CPU-only machine).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Protocol

from priorflow.config import Resources, RunConfig
from priorflow.core.blanket import BlanketPlan
from priorflow.core.precision import resolve_precision
from priorflow.core.seeds import job_seed
from priorflow.errors import ConfigError
from priorflow.models.card import ModelCard
from priorflow.plan.jobs import Job, JobResources, RunPlan, SizePlan, group_name, job_name
from priorflow.plan.spec import SamplingSpec


class CoverageChecker(Protocol):
    """What the plan needs of an archive (:class:`priorflow.data.archive.LatentArchive`)."""

    state_shape: tuple[int, ...]
    state_dims: tuple[str, ...]

    def require_covers(
        self, start: datetime, length: int, dt_hours: int, field: str = "start_dates"
    ) -> None: ...


MAX_JOBS = 100_000  # members in one run


def job_memory_bytes(
    blankets: BlanketPlan, state_size: int, blanket_batch: int | None, members: int = 1
) -> int:
    r"""A lower bound on the memory one task needs while it samples, in bytes (float32).

    For :math:`M` members sampled together: the sampler state and its history,
    :math:`M T_{pad} D` values each (lms keeps ``x``, the denoised ``x`` and ``order``
    derivatives: 6 in all at order 3), and one backbone call's blankets gathered, denoised and
    folded, :math:`3 B K D` values, with :math:`B` blankets per call (``blanket_batch``, else all
    :math:`M N`). The backbone's own activations come on top.
    """
    states = members * blankets.padded_size * state_size
    per_call = blanket_batch or members * blankets.num_blankets
    return 4 * (6 * states + 3 * per_call * blankets.blanket_size * state_size)


def resolve_archive_path(config: RunConfig, card: ModelCard) -> str | None:
    """The archive of a run: ``config.archive``, else the card's ``archive``.

    A relative card archive is relative to the model directory.
    """
    return config.archive or card_archive_path(config.model_path, card.archive)


def card_archive_path(model_path: str, archive: str | None) -> str | None:
    """A card's ``archive``: a URL or an absolute path as it is, a relative path against the
    model directory ``model_path`` (a model moved with its archive keeps pointing at it)."""
    if not archive:
        return None
    if "://" in archive:
        return archive
    path = Path(archive).expanduser()
    return str(path if path.is_absolute() else Path(model_path) / path)


def sampling_spec(
    config: RunConfig, card: ModelCard, checkpoint_sha256: str | None = None
) -> SamplingSpec:
    """The run's :class:`SamplingSpec`: the config's settings with the card's defaults."""
    if config.blanket_overlap >= card.blanket_size:
        raise ConfigError(
            f"blanket_overlap: {config.blanket_overlap} must be smaller than the model's"
            f" blanket_size {card.blanket_size}"
        )
    return SamplingSpec(
        model_path=config.model_path,
        model_target=config.model_target,
        card=card,
        num_steps=int(config.diffusion.num_steps or card.denoising_steps),
        sampler=config.diffusion.sampler.type,
        sampler_config=dict(config.diffusion.sampler.config),
        blanket_overlap=config.blanket_overlap,
        fold_mode=config.fold_mode,
        precision=resolve_precision(config.precision, card.precision),
        seed=config.seed,
        blanket_batch=config.blanket_batch,
        checkpoint_sha256=checkpoint_sha256,
        members_per_task=config.members_per_task,
    )


def make_plan(
    config: RunConfig,
    card: ModelCard,
    archive: CoverageChecker | None = None,
    *,
    checkpoint_sha256: str | None = None,
    gpus_available: int | None = None,
) -> RunPlan:
    """Plan a run from its config and the model card; check it against ``archive`` if given.

    Arguments:
        config: the validated run config.
        card: the model's card (:func:`priorflow.models.card.read_card`).
        archive: an opened archive (:func:`priorflow.data.archive.open_archive`); every start
            date plus the longest trajectory must lie inside it, and its state shape must be the
            model's. Its ``state_dims`` name the store's state dimensions.
        checkpoint_sha256: the checkpoint's hash, recorded in the spec (the model's identity).
        gpus_available: the GPUs a local run can use; caps the GPUs per job (0 on a CPU-only
            machine). ``None``: no cap (cluster backends).

    Raises:
        ConfigError / ArchiveError: one line, before anything is written.
    """
    spec = sampling_spec(config, card, checkpoint_sha256)
    _check_size(config, spec)
    state_dims = _state_dims(spec, config, archive)
    hardware = config.hardware
    members = config.num_samples_per_date
    sizes = []
    for T0 in config.trajectory_sizes:
        blankets = BlanketPlan(T0, spec.blanket_size, spec.blanket_overlap)
        group = group_name(T0, spec.dt_hours)
        gpus = _resolve_gpus(
            hardware.gen, "gen", blankets.num_blankets, hardware.gpus_per_node, gpus_available
        )
        resources = _job_resources(hardware.gen, gpus)
        jobs = tuple(
            Job(
                size=T0,
                group=group,
                start=start,
                date_index=d,
                member=m,
                seed=job_seed(config.seed, T0, start, m),
                name=job_name(group, start, m),
                resources=resources,
                spec=spec,
            )
            for d, start in enumerate(config.start_dates)
            for m in range(members)
        )
        sizes.append(SizePlan(group, T0 * spec.dt_hours, blankets, jobs))
    aggregate_gpus = (
        0
        if hardware.aggregate.gpus == "auto"
        else _resolve_gpus(
            hardware.aggregate, "aggregate", 1, hardware.gpus_per_node, gpus_available
        )
    )
    return RunPlan(
        run_id=str(config.run_id),
        run_dir=config.run_dir,
        backend=hardware.backend,
        spec=spec,
        state_dims=state_dims,
        start_dates=tuple(config.start_dates),
        members=members,
        sizes=tuple(sizes),
        aggregate_resources=_job_resources(hardware.aggregate, aggregate_gpus),
        archive_path=resolve_archive_path(config, card),
        standardization=getattr(archive, "standardization", None),
    )


def _check_size(config: RunConfig, spec: SamplingSpec) -> None:
    """Refuse, in one line, a run that cannot run: too many jobs, or a job larger than the
    memory ``hardware.gen.ram`` gives it (saying how to split it)."""
    from dask.utils import format_bytes, parse_bytes

    jobs = len(config.trajectory_sizes) * len(config.start_dates) * config.num_samples_per_date
    if jobs > MAX_JOBS:
        raise ConfigError(
            f"num_samples_per_date: {config.num_samples_per_date} members x"
            f" {len(config.start_dates)} dates x {len(config.trajectory_sizes)} sizes is {jobs:,}"
            f" jobs, more than {MAX_JOBS:,} in one run; split it into several runs"
        )
    ram = parse_bytes(config.hardware.gen.ram)
    state_size = math.prod(spec.state_shape)
    longest = BlanketPlan(max(config.trajectory_sizes), spec.blanket_size, spec.blanket_overlap)
    members = min(spec.members_per_task, config.num_samples_per_date * len(config.start_dates))
    need = job_memory_bytes(longest, state_size, spec.blanket_batch, members)
    if need > ram:
        what = f"a trajectory of {longest.trajectory_size:,} states needs"
        if members > 1:
            what = f"{members} trajectories of {longest.trajectory_size:,} states (members_per_task) need"
        raise ConfigError(
            f"trajectory_sizes: {what} at least {format_bytes(need)} (sampler state of"
            f" {members * longest.padded_size:,} states and"
            f" {spec.blanket_batch or members * longest.num_blankets:,} blankets per backbone"
            f" call, of {state_size:,} values each), more than hardware.gen.ram"
            f" {config.hardware.gen.ram}; sample shorter trajectories, lower members_per_task,"
            " set blanket_batch, or give the job more ram"
        )


def _state_dims(
    spec: SamplingSpec, config: RunConfig, archive: CoverageChecker | None
) -> tuple[str, ...]:
    """The state dimension names (the archive's), after checking the archive against the run."""
    shape = spec.state_shape
    default = ("state",) if len(shape) == 1 else tuple(f"state_{i}" for i in range(len(shape)))
    if archive is None:
        return default
    if tuple(archive.state_shape) != shape:
        raise ConfigError(
            f"archive: states of shape {tuple(archive.state_shape)} — the model's state_shape is"
            f" {shape}; use the archive the model was trained on"
        )
    longest = max(config.trajectory_sizes)
    for start in config.start_dates:
        archive.require_covers(start, longest, spec.dt_hours, field="start_dates")
    dims = tuple(str(d) for d in archive.state_dims)
    return dims if len(dims) == len(shape) else default


def _resolve_gpus(
    resources: Resources,
    key: str,
    num_blankets: int,
    gpus_per_node: int | None,
    gpus_available: int | None,
) -> int:
    gpus = resources.gpus
    if gpus == "auto":
        gpus = math.ceil(num_blankets / int(resources.blankets_per_gpu or 1))
        if gpus_per_node is not None:
            gpus = min(gpus, gpus_per_node)
    elif gpus_per_node is not None and gpus > gpus_per_node:
        raise ConfigError(
            f"hardware.{key}.gpus: {gpus} — more than hardware.gpus_per_node ({gpus_per_node})"
        )
    if gpus_available is not None:
        gpus = min(gpus, gpus_available)
    return int(gpus)


def _job_resources(resources: Resources, gpus: int) -> JobResources:
    return JobResources(
        cpus=resources.cpus,
        ram=resources.ram,
        time=resources.time,
        partition=resources.partition,
        gpus=gpus,
    )
