"""The plan of a run: its sampling spec, its jobs and their resources, checked before anything runs.

- :mod:`~priorflow.plan.spec`: :class:`SamplingSpec`, the one record of the sampling settings;
- :mod:`~priorflow.plan.jobs`: :class:`Job`, :class:`SizePlan`, :class:`RunPlan` and their names;
- :mod:`~priorflow.plan.planner`: :func:`make_plan` (config + card + archive -> plan);
- :mod:`~priorflow.plan.text`: :func:`format_plan`.
"""

from priorflow.plan.jobs import (
    Job,
    JobResources,
    RunPlan,
    SizePlan,
    batches,
    group_name,
    job_name,
    task_label,
)
from priorflow.plan.planner import (
    card_archive_path,
    make_plan,
    resolve_archive_path,
    sampling_spec,
)
from priorflow.plan.spec import SamplingSpec, spec_differences
from priorflow.plan.text import format_plan

__all__ = [
    "Job",
    "JobResources",
    "RunPlan",
    "SamplingSpec",
    "SizePlan",
    "batches",
    "card_archive_path",
    "format_plan",
    "group_name",
    "job_name",
    "make_plan",
    "resolve_archive_path",
    "sampling_spec",
    "spec_differences",
    "task_label",
]
