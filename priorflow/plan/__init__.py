r"""The plan of a run: trajectory sizes, blankets, one job per (size, start date, member), resources.

For each trajectory size :math:`T_0` (states, ``dt`` hours apart) the group is named by its span,
``f"{T0 * dt}h"`` (``72h``); the blankets follow :class:`priorflow.core.blanket.BlanketPlan`
(:math:`T_{pad}`, :math:`N`). Every job samples one trajectory with its own seed
(:func:`priorflow.core.seeds.job_seed`) and is named ``gen-72h-2000-04-03T00-m1`` (members count
from 0). Everything is checked here, before anything is written or submitted.

``gpus: auto`` gives a job :math:`\lceil N / \text{blankets\_per\_gpu} \rceil` GPUs, capped by
``hardware.gpus_per_node`` and by ``gpus_available`` (the GPUs a local run can see; 0 on a
CPU-only machine).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from priorflow.core.blanket import BlanketPlan
from priorflow.config import Resources, RunConfig, format_sizes
from priorflow.core.dates import date_label
from priorflow.errors import ConfigError
from priorflow.models.loading import ModelCard
from priorflow.core.precision import resolve_precision
from priorflow.core.seeds import job_seed

__all__ = [
    "Job",
    "JobResources",
    "RunPlan",
    "SizePlan",
    "format_plan",
    "group_name",
    "job_name",
    "make_plan",
    "resolve_archive_path",
]


class CoverageChecker(Protocol):
    """What the plan needs of an archive (:class:`priorflow.data.archive.LatentArchive`)."""

    def require_covers(
        self, start: datetime, length: int, dt_hours: int, field: str = "start_dates"
    ) -> None: ...


@dataclass(frozen=True)
class JobResources:
    """Resources of one job: what a scheduler is asked for (``gpus`` already resolved)."""

    cpus: int
    ram: str
    time: str
    partition: str | None
    gpus: int


@dataclass(frozen=True)
class Job:
    """One generation job: one trajectory of ``size`` states from ``start``, member ``member``.

    ``date_index`` and ``member`` are its position in the store's ``(start_date, member)`` axes;
    ``group`` is the store group (``72h``); ``seed`` feeds ``torch.Generator`` for all its noise.
    """

    size: int
    group: str
    span_hours: int
    start: datetime
    date_index: int
    member: int
    seed: int
    name: str
    gpus: int
    resources: JobResources

    @property
    def trajectory_size(self) -> int:
        """Alias of ``size`` (:math:`T_0`)."""
        return self.size


@dataclass(frozen=True)
class SizePlan:
    """One trajectory size: blankets and its jobs (dates x members, date-major)."""

    trajectory_size: int
    span_hours: int
    group: str
    padded_size: int
    num_blankets: int
    stride: int
    gpus: int
    jobs: tuple[Job, ...]


# The run settings every job passes to ``generate_trajectory`` (besides its own size, start, seed).
GENERATION_FIELDS = (
    "overlap",
    "sampler",
    "sampler_config",
    "steps",
    "fold",
    "precision",
    "blanket_batch",
)


def generation_kwargs(job: Job, settings: Any) -> dict[str, Any]:
    """Keyword arguments of ``generate_trajectory(model, **kwargs)`` for ``job``.

    ``settings`` is anything with the :data:`GENERATION_FIELDS` attributes (a :class:`RunPlan`,
    or the small picklable settings a task receives). Gives ``trajectory_size, start, seed`` and
    those fields; add ``devices`` and ``progress`` yourself.
    """
    kwargs = {"trajectory_size": job.size, "start": job.start, "seed": job.seed}
    kwargs.update({name: getattr(settings, name) for name in GENERATION_FIELDS})
    kwargs["sampler_config"] = dict(kwargs["sampler_config"])
    return kwargs


@dataclass(frozen=True)
class RunPlan:
    """Everything a run will do, resolved: the settings every job shares and the jobs.

    ``steps`` (``diffusion.num_steps`` or the card's ``denoising_steps``), ``precision`` (the
    card's training precision when the config says null) and ``sampler_config`` (with defaults)
    are resolved. Use :meth:`generate_kwargs` to call
    :func:`priorflow.core.generate.generate_trajectory` for a job.
    """

    run_id: str
    run_dir: Path
    model_path: str
    model_target: str
    backend: str
    blanket_size: int
    dt_hours: int
    state_shape: tuple[int, ...]
    state_dims: tuple[str, ...]
    overlap: int
    fold: str
    sampler: str
    sampler_config: dict[str, Any]
    steps: int
    precision: str
    seed: int
    blanket_batch: int | None
    start_dates: tuple[datetime, ...]
    members: int
    sizes: tuple[SizePlan, ...]
    aggregate_resources: JobResources
    archive_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def jobs(self) -> list[Job]:
        """Every job, size by size, date-major then member."""
        return [job for size in self.sizes for job in size.jobs]

    @property
    def num_jobs(self) -> int:
        return sum(len(size.jobs) for size in self.sizes)

    def size(self, key: int | str) -> SizePlan:
        """The :class:`SizePlan` of ``key``: a trajectory size (72) or a group name ("72h")."""
        for size in self.sizes:
            if key in (size.trajectory_size, size.group):
                return size
        known = ", ".join(size.group for size in self.sizes)
        raise ConfigError(f"size: {key!r} is not in this run — it has {known}")

    def generate_kwargs(self, job: Job) -> dict[str, Any]:
        """Keyword arguments of ``generate_trajectory(model, **kwargs)`` for ``job``
        (see :func:`generation_kwargs`)."""
        return generation_kwargs(job, self)

    def settings(self) -> dict[str, Any]:
        """The settings that decide the samples (compared when a run is resumed), JSON-able."""
        return {
            "model_path": self.model_path,
            "model_target": self.model_target,
            "sampler": self.sampler,
            "sampler_config": dict(self.sampler_config),
            "steps": self.steps,
            "overlap": self.overlap,
            "fold": self.fold,
            "precision": self.precision,
            "seed": self.seed,
            "blanket_size": self.blanket_size,
        }

    def summary(self) -> dict[str, Any]:
        """A small JSON-able description (for artifacts and reports); no job list."""
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "backend": self.backend,
            **self.settings(),
            "dt_hours": self.dt_hours,
            "state_shape": list(self.state_shape),
            "start_dates": [date_label(d) for d in self.start_dates],
            "members": self.members,
            "num_jobs": self.num_jobs,
            "sizes": [
                {k: v for k, v in asdict(size).items() if k != "jobs"} | {"jobs": len(size.jobs)}
                for size in self.sizes
            ],
            "aggregate_resources": asdict(self.aggregate_resources),
        }


def group_name(trajectory_size: int, dt_hours: int) -> str:
    """The store group of a size: its span in hours, ``"72h"``."""
    return f"{trajectory_size * dt_hours}h"


def job_name(group: str, start: datetime, member: int) -> str:
    """``gen-72h-2000-04-03T00-m1``: the task run's name in the Prefect UI and the mark's name."""
    return f"gen-{group}-{date_label(start)}-m{member}"


def resolve_archive_path(config: RunConfig, card: ModelCard) -> str | None:
    """The archive of a run: ``config.archive``, else the card's ``archive``.

    A relative card archive is relative to the model directory.
    """
    if config.archive:
        return config.archive
    if not card.archive:
        return None
    if "://" in card.archive:
        return card.archive
    path = Path(card.archive).expanduser()
    return str(path if path.is_absolute() else Path(config.model_path) / path)


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


def _default_state_dims(ndim: int) -> tuple[str, ...]:
    return ("state",) if ndim == 1 else tuple(f"state_{i}" for i in range(ndim))


def make_plan(
    config: RunConfig,
    card: ModelCard,
    archive: CoverageChecker | None = None,
    *,
    gpus_available: int | None = None,
) -> RunPlan:
    """Plan a run from its config and the model card; check it against ``archive`` if given.

    Arguments:
        config: the validated run config.
        card: the model's card (:func:`priorflow.models.loading.read_card`; a ``Model`` works too).
        archive: an opened archive (:func:`priorflow.data.archive.open_archive`); every start date
            plus the longest trajectory must lie inside it (``require_covers``), and its state
            shape must be the model's. Its ``state_dims`` name the store's state dimensions.
        gpus_available: the GPUs a local run can use (``torch.cuda.device_count()``); caps the
            GPUs per job (0 on a CPU-only machine). ``None``: no cap (cluster backends).

    Raises:
        ConfigError / ArchiveError: one line, before anything is written.
    """
    card = getattr(card, "card", card)
    K = card.blanket_size
    overlap = config.blanket_overlap
    if overlap >= K:
        raise ConfigError(
            f"blanket_overlap: {overlap} must be smaller than the model's blanket_size {K}"
        )
    steps = config.diffusion.num_steps or card.denoising_steps
    precision = resolve_precision(config.precision, card.precision)
    dt = card.dt_hours
    state_shape = tuple(int(n) for n in card.state_shape)
    state_dims = _default_state_dims(len(state_shape))
    if archive is not None:
        archive_shape = getattr(archive, "state_shape", None)
        if archive_shape is not None and tuple(archive_shape) != state_shape:
            raise ConfigError(
                f"archive: states of shape {tuple(archive_shape)} — the model's state_shape is"
                f" {state_shape}; use the archive the model was trained on"
            )
        dims = getattr(archive, "state_dims", None)
        if dims is not None and len(tuple(dims)) == len(state_shape):
            state_dims = tuple(str(d) for d in dims)
        longest = max(config.trajectory_sizes)
        for start in config.start_dates:
            archive.require_covers(start, longest, dt, field="start_dates")

    hardware = config.hardware
    members = config.num_samples_per_date
    sizes = []
    for T0 in config.trajectory_sizes:
        blankets = BlanketPlan(T0, K, overlap)
        group = group_name(T0, dt)
        gpus = _resolve_gpus(
            hardware.gen, "gen", blankets.num_blankets, hardware.gpus_per_node, gpus_available
        )
        resources = _job_resources(hardware.gen, gpus)
        jobs = tuple(
            Job(
                size=T0,
                group=group,
                span_hours=T0 * dt,
                start=start,
                date_index=d,
                member=m,
                seed=job_seed(config.seed, T0, start, m),
                name=job_name(group, start, m),
                gpus=gpus,
                resources=resources,
            )
            for d, start in enumerate(config.start_dates)
            for m in range(members)
        )
        sizes.append(
            SizePlan(
                trajectory_size=T0,
                span_hours=T0 * dt,
                group=group,
                padded_size=blankets.padded_size,
                num_blankets=blankets.num_blankets,
                stride=blankets.stride,
                gpus=gpus,
                jobs=jobs,
            )
        )
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
        model_path=config.model_path,
        model_target=config.model_target,
        backend=hardware.backend,
        blanket_size=K,
        dt_hours=dt,
        state_shape=state_shape,
        state_dims=state_dims,
        overlap=overlap,
        fold=config.fold_mode,
        sampler=config.diffusion.sampler.type,
        sampler_config=dict(config.diffusion.sampler.config),
        steps=int(steps),
        precision=precision,
        seed=config.seed,
        blanket_batch=config.blanket_batch,
        start_dates=tuple(config.start_dates),
        members=members,
        sizes=tuple(sizes),
        aggregate_resources=_job_resources(hardware.aggregate, aggregate_gpus),
        archive_path=resolve_archive_path(config, card),
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)) for row in rows]
    return out


def _resources_line(kind: str, r: JobResources) -> str:
    partition = r.partition or "-"
    return f"  {kind:<10} cpus {r.cpus}, ram {r.ram}, time {r.time}, partition {partition}, gpus {r.gpus}"


def format_plan(plan: RunPlan) -> str:
    """The plan as a text table: settings, then one row per size, then resources."""
    config = ", ".join(f"{k}={v}" for k, v in plan.sampler_config.items()) or "defaults"
    dates = ", ".join(date_label(d) for d in plan.start_dates)
    lines = [
        f"run        {plan.run_id}  ->  {plan.run_dir}",
        f"model      {plan.model_path} ({plan.model_target}); blanket_size K={plan.blanket_size},"
        f" dt={plan.dt_hours}h, state {plan.state_shape}",
        f"sampler    {plan.sampler} ({config}), {plan.steps} steps, {plan.precision},"
        f" overlap O={plan.overlap}, fold {plan.fold}, seed {plan.seed}",
        f"dates      {len(plan.start_dates)}: {dates}",
        f"members    {plan.members} per date",
        f"sizes      {format_sizes([s.trajectory_size for s in plan.sizes])}",
        "",
    ]
    header = ["group", "states T0", "padded T_pad", "blankets N", "stride S", "jobs", "gpus/job"]
    rows = [
        [
            s.group,
            str(s.trajectory_size),
            str(s.padded_size),
            str(s.num_blankets),
            str(s.stride),
            str(len(s.jobs)),
            str(s.gpus),
        ]
        for s in plan.sizes
    ]
    lines += _table(header, rows)
    gen = plan.sizes[0].jobs[0].resources if plan.sizes and plan.sizes[0].jobs else None
    lines += ["", f"jobs       {plan.num_jobs} generation + {len(plan.sizes)} aggregation"]
    lines += [f"resources  backend {plan.backend}"]
    if gen is not None:
        line = _resources_line("gen", gen)
        if len({s.gpus for s in plan.sizes}) > 1:
            line = line.rsplit(", gpus", 1)[0] + ", gpus per size (gpus/job above)"
        lines.append(line)
    lines.append(_resources_line("aggregate", plan.aggregate_resources))
    return "\n".join(lines)
