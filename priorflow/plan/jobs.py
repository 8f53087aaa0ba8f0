r"""The parts of a plan: one :class:`Job` per (trajectory size, start date, member), grouped by size.

For each trajectory size :math:`T_0` (states, ``dt`` hours apart) the group is named by its span,
``f"{T0 * dt}h"`` (``72h``); a job is named ``gen-72h-2000-04-03T00-m1`` (members count from 0):
the task run's name in the Prefect UI and its done mark's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from priorflow.core.blanket import BlanketPlan
from priorflow.core.dates import date_label
from priorflow.errors import ConfigError
from priorflow.plan.spec import SamplingSpec


def group_name(trajectory_size: int, dt_hours: int) -> str:
    """The store group of a size: its span in hours, ``"72h"``."""
    return f"{trajectory_size * dt_hours}h"


def job_name(group: str, start: datetime, member: int) -> str:
    """``gen-72h-2000-04-03T00-m1``: the task run's name in the Prefect UI and the mark's name."""
    return f"gen-{group}-{date_label(start)}-m{member}"


def batches(jobs: Sequence[Job], per_task: int) -> list[tuple[Job, ...]]:
    """``jobs`` in tasks of at most ``per_task`` members of one size each, in order."""
    out: list[tuple[Job, ...]] = []
    for job in jobs:
        if out and len(out[-1]) < per_task and out[-1][0].size == job.size:
            out[-1] = (*out[-1], job)
        else:
            out.append((job,))
    return out


def task_label(jobs: Sequence[Job]) -> str:
    """The task run's name: its job's name, or the first one's and how many more."""
    return jobs[0].name if len(jobs) == 1 else f"{jobs[0].name}+{len(jobs) - 1}"


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
    ``group`` is the store group (``72h``); ``seed`` feeds ``torch.Generator`` for all its noise;
    ``spec`` holds how it is sampled (the run's one :class:`SamplingSpec`).
    """

    size: int
    group: str
    start: datetime
    date_index: int
    member: int
    seed: int
    name: str
    resources: JobResources
    spec: SamplingSpec

    @property
    def gpus(self) -> int:
        """GPUs the job holds."""
        return self.resources.gpus


@dataclass(frozen=True)
class SizePlan:
    """One trajectory size: its blankets and its jobs (dates x members, date-major)."""

    group: str
    span_hours: int
    blankets: BlanketPlan
    jobs: tuple[Job, ...]

    @property
    def trajectory_size(self) -> int:
        """:math:`T_0`."""
        return self.blankets.trajectory_size

    @property
    def padded_size(self) -> int:
        r""":math:`T_{pad}`."""
        return self.blankets.padded_size

    @property
    def num_blankets(self) -> int:
        """:math:`N`."""
        return self.blankets.num_blankets

    @property
    def stride(self) -> int:
        """:math:`S = K - O`."""
        return self.blankets.stride

    @property
    def gpus(self) -> int:
        """GPUs of one job of this size."""
        return self.jobs[0].gpus if self.jobs else 0


@dataclass(frozen=True)
class RunPlan:
    """Everything a run will do, resolved: where it goes, how it samples, its jobs.

    ``spec`` is the one record of the sampling settings; ``state_dims`` name the store's state
    dimensions (the archive's, else ``state_0, state_1, ...``).
    """

    run_id: str
    run_dir: Path
    backend: str
    spec: SamplingSpec
    state_dims: tuple[str, ...]
    start_dates: tuple[datetime, ...]
    members: int
    sizes: tuple[SizePlan, ...]
    aggregate_resources: JobResources
    archive_path: str | None = None
    #: How the archive's states were standardized (Appa: mean, std, sha256 of stats.pth), so a
    #: decoder can undo it; ``None`` for an archive stored standardized (or none).
    standardization: dict[str, Any] | None = None

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

    def summary(self) -> dict[str, Any]:
        """A small JSON-able description (for artifacts and reports); no job list."""
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "backend": self.backend,
            **self.spec.attrs(),
            "state_dims": list(self.state_dims),
            "start_dates": [date_label(d) for d in self.start_dates],
            "members": self.members,
            "num_jobs": self.num_jobs,
            "sizes": [
                {
                    "group": s.group,
                    "trajectory_size": s.trajectory_size,
                    "span_hours": s.span_hours,
                    "padded_size": s.padded_size,
                    "num_blankets": s.num_blankets,
                    "stride": s.stride,
                    "gpus": s.gpus,
                    "jobs": len(s.jobs),
                }
                for s in self.sizes
            ],
            "aggregate_resources": vars(self.aggregate_resources),
        }
