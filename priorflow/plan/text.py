"""A plan as text: what ``priorflow plan`` prints (settings, one row per size, resources)."""

from __future__ import annotations

from priorflow.config import format_sizes
from priorflow.config.values import time_words
from priorflow.core.dates import date_label
from priorflow.plan.jobs import JobResources, RunPlan


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)) for row in rows]
    return out


def _resources_line(kind: str, r: JobResources) -> str:
    partition = r.partition or "-"
    return (
        f"  {kind:<10} cpus {r.cpus}, ram {r.ram}, time {time_words(r.time)},"
        f" partition {partition}, gpus {r.gpus}"
    )


def format_plan(plan: RunPlan) -> str:
    """The plan as a text table: settings, then one row per size, then resources."""
    spec = plan.spec
    config = ", ".join(f"{k}={v}" for k, v in spec.sampler_config.items()) or "defaults"
    dates = ", ".join(date_label(d) for d in plan.start_dates)
    lines = [
        f"run        {plan.run_id}  ->  {plan.run_dir}",
        f"model      {spec.model_path} ({spec.model_target}); blanket_size K={spec.blanket_size},"
        f" dt={spec.dt_hours}h, state {spec.state_shape}",
        f"sampler    {spec.sampler} ({config}), {spec.num_steps} steps, {spec.precision},"
        f" overlap O={spec.blanket_overlap}, fold {spec.fold_mode}, seed {spec.seed}",
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
