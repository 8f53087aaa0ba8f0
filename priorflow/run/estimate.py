r"""How long a run's jobs will take, measured on earlier runs of the same model: the walltime check
of ``priorflow plan``.

The estimate of one task (``members_per_task`` members of one size, sampled as one batch) is

.. math:: t_{task} = r \times E \times N \times M

with :math:`E` the sampler's denoiser evaluations (``num_steps``; twice that for heun, ...),
:math:`N` the blankets of a trajectory, :math:`M` the members of the task, and :math:`r` the
seconds per blanket evaluation (one blanket through the backbone, gathered and folded)
*measured* by the earlier members of the same model (same checkpoint sha256), on the same kind
of device (``cuda`` when the run's jobs hold GPUs, else ``cpu``) and in the same precision, in
the runs under the run's ``output_dir``: the slowest member's rate (a walltime must cover the
slowest), from the newest :data:`MAX_RUNS` such runs. The backbone is 96 % of a generation
(README, Performance), so :math:`r` carries over across sizes, steps and samplers.

A worker job (a batch job on slurm/pbs/lsf) runs ``ceil(tasks / workers)`` tasks one after the
other, with ``workers = min(tasks, hardware.max_workers)``: its estimate is the sum of that many
of the longest tasks. Not counted: queueing, the worker's start and the model's loading (once
per worker). With no earlier run there is no estimate: the GPUs of a cluster cannot be timed
from the machine that plans, and a guess would warn wrongly.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from priorflow.config import BATCH_BACKENDS, Hardware, slurm_time_seconds
from priorflow.config.values import duration_words, time_words
from priorflow.core.samplers import make_sampler
from priorflow.core.schedules import make_schedule
from priorflow.plan import RunPlan, SamplingSpec, batches
from priorflow.run.cluster import worker_count
from priorflow.store import read_marks, store_path
from priorflow.store.layout import is_run_dir, read_store_attrs

#: Earlier runs read for a rate, newest first.
MAX_RUNS = 20


@dataclass(frozen=True)
class Rate:
    """Seconds per blanket evaluation, the slowest of ``members`` members in ``runs`` runs."""

    seconds: float
    members: int
    runs: int
    device: str


@dataclass(frozen=True)
class RunTimeEstimate:
    """The estimate of a run's tasks and of one worker job (see the module docstring)."""

    rate: Rate
    task_seconds: tuple[float, ...]
    workers: int
    tasks_per_worker: int

    @property
    def longest_task(self) -> float:
        return max(self.task_seconds, default=0.0)

    @property
    def worker_seconds(self) -> float:
        """A worker job's estimate: its ``tasks_per_worker`` longest tasks one after another."""
        longest = sorted(self.task_seconds, reverse=True)[: self.tasks_per_worker]
        return float(sum(longest))


def device_kind(plan: RunPlan) -> str:
    """``cuda`` when the run's jobs hold GPUs, else ``cpu``."""
    return "cuda" if any(job.gpus > 0 for job in plan.jobs) else "cpu"


def sampler_evaluations(spec: SamplingSpec) -> int:
    """Denoiser evaluations of one trajectory with the spec's sampler and steps."""
    schedule = spec.card.schedule
    sampler = make_sampler(
        spec.sampler,
        lambda x, sigma: x,
        make_schedule(schedule.name, schedule.sigma_min, schedule.sigma_max),
        spec.num_steps,
        **dict(spec.sampler_config),
    )
    return sampler.evaluations


def measured_rate(
    output_dir: str | os.PathLike[str],
    checkpoint_sha256: str | None,
    device: str,
    precision: str,
) -> Rate | None:
    """The slowest seconds per blanket evaluation of the earlier members of this model on this
    kind of device in this precision, in the run directories under ``output_dir``; None when
    there are none (or the checkpoint is not known)."""
    root = Path(output_dir)
    if not checkpoint_sha256 or not root.is_dir():
        return None
    candidates = []
    with contextlib.suppress(OSError):
        candidates = [d for d in root.iterdir() if is_run_dir(d) and store_path(d).is_dir()]
    candidates.sort(key=_mtime, reverse=True)
    rates: list[float] = []
    runs = 0
    for run_dir in candidates[:MAX_RUNS]:
        try:
            same = read_store_attrs(store_path(run_dir)).get("checkpoint_sha256")
        except Exception:  # not readable: not a measurement
            continue
        if same != checkpoint_sha256:
            continue
        found = [
            rate
            for mark in read_marks(run_dir)
            if (rate := _rate(mark.get("record") or {}, device, precision)) is not None
        ]
        runs += bool(found)
        rates += found
    if not rates:
        return None
    return Rate(max(rates), len(rates), runs, device)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _rate(record: dict, device: str, precision: str) -> float | None:
    seconds, evaluations = record.get("seconds"), record.get("blanket_evaluations")
    if not str(record.get("device", "")).startswith(device):
        return None
    if record.get("precision") != precision or not evaluations or not seconds:
        return None
    return float(seconds) / float(evaluations)


def estimate_run_time(plan: RunPlan, rate: Rate, workers: int) -> RunTimeEstimate:
    """The estimate of every task of ``plan`` and of a worker job with ``workers`` workers."""
    evaluations = sampler_evaluations(plan.spec)
    tasks = batches(plan.jobs, plan.spec.members_per_task)
    blankets = {size.trajectory_size: size.num_blankets for size in plan.sizes}
    seconds = tuple(
        rate.seconds * evaluations * blankets[task[0].size] * len(task) for task in tasks
    )
    workers = max(1, min(workers, len(tasks)))
    return RunTimeEstimate(rate, seconds, workers, math.ceil(len(tasks) / workers))


def estimate_for(plan: RunPlan, hardware: Hardware, output_dir: str) -> RunTimeEstimate | None:
    """The plan's estimate, workers as its backend starts them (batch: ``min(tasks,
    max_workers)``; otherwise one, as a bound); None without a measured rate."""
    rate = measured_rate(
        output_dir, plan.spec.checkpoint_sha256, device_kind(plan), plan.spec.precision
    )
    if rate is None:
        return None
    tasks = len(batches(plan.jobs, plan.spec.members_per_task))
    workers = (
        worker_count(tasks, hardware.max_workers) if hardware.backend in BATCH_BACKENDS else 1
    )
    return estimate_run_time(plan, rate, workers)


def estimate_lines(estimate: RunTimeEstimate | None, plan: RunPlan, output_dir: str) -> list[str]:
    """What ``priorflow plan`` prints about run time."""
    if estimate is None:
        return [
            f"run time   no estimate: no earlier run of this model on {device_kind(plan)} in"
            f" {plan.spec.precision} under {output_dir} (walltimes not checked)"
        ]
    rate = estimate.rate
    lines = [
        f"run time   ~{duration_words(estimate.longest_task)} for the longest task"
        f" ({sampler_evaluations(plan.spec)} evaluations x blankets x members, at"
        f" {rate.seconds * 1e3:.3g} ms per blanket evaluation: the slowest of {rate.members}"
        f" members of {rate.runs} earlier run{'s' if rate.runs != 1 else ''} on {rate.device})"
    ]
    if plan.backend in BATCH_BACKENDS:
        lines.append(
            f"           a worker job runs up to {estimate.tasks_per_worker} task"
            f"{'s' if estimate.tasks_per_worker != 1 else ''}"
            f" ({estimate.workers} workers): ~{duration_words(estimate.worker_seconds)}"
        )
    return lines


def walltime_warning(
    estimate: RunTimeEstimate | None, plan: RunPlan, hardware: Hardware
) -> str | None:
    """One line when a worker job's walltime (``hardware.gen.time``, batch backends) is shorter
    than its estimate; None otherwise."""
    if estimate is None or plan.backend not in BATCH_BACKENDS:
        return None
    walltime = slurm_time_seconds(hardware.gen.time)
    need = estimate.worker_seconds
    if walltime >= need:
        return None
    tasks = estimate.tasks_per_worker
    more = " (or more hardware.max_workers)" if tasks > 1 else ""
    return (
        f"hardware.gen.time: {time_words(hardware.gen.time)} is shorter than a worker job's"
        f" estimated run time, ~{duration_words(need)} ({tasks} task{'s' if tasks != 1 else ''}"
        f" of up to ~{duration_words(estimate.longest_task)}); give the jobs more time{more}"
    )
