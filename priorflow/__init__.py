"""priorflow: prior trajectories from latent diffusion models of the atmosphere.

The library, in layers (each imports only those below it; no Prefect, no Dask distributed, no
dask-jobqueue anywhere in it)::

    run         prepare a run, execute one job, describe its workers
    evaluation  the prior check: metrics, baselines, verdict, report, plots
    store       the zarr store: schema, members and marks, aggregation, export
    plan        the sampling spec, the jobs and their resources
    config      the run config: schema, loading, one-line messages
    models      model cards, loading, the reference and exact backbones, training
    data        latent archives and the synthetic world
    core        schedules, denoiser, blankets, samplers, seeds, dates, generation

The names a notebook needs are importable from here (``from priorflow import load_model,
generate_trajectory``), whatever module they live in; they are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "BlanketDenoiser": "priorflow.core.blanket",
    "BlanketPlan": "priorflow.core.blanket",
    "PreconditionedDenoiser": "priorflow.core.denoiser",
    "Trajectory": "priorflow.core.generate",
    "generate_trajectory": "priorflow.core.generate",
    "make_sampler": "priorflow.core.samplers",
    "make_schedule": "priorflow.core.schedules",
    "job_seed": "priorflow.core.seeds",
    "make_generator": "priorflow.core.seeds",
    "timestamps": "priorflow.core.dates",
    "LatentArchive": "priorflow.data.archive",
    "open_archive": "priorflow.data.archive",
    "SyntheticWorld": "priorflow.data.synthetic",
    "write_synthetic_archive": "priorflow.data.synthetic_archive",
    "Model": "priorflow.models.loading",
    "load_model": "priorflow.models.loading",
    "ModelCard": "priorflow.models.card",
    "read_card": "priorflow.models.card",
    "write_exact_model": "priorflow.models.exact",
    "RunConfig": "priorflow.config",
    "load_config": "priorflow.config",
    "SamplingSpec": "priorflow.plan",
    "make_plan": "priorflow.plan",
    "open_group": "priorflow.store",
    "export_pt": "priorflow.store.export",
    "run_check": "priorflow.evaluation.check",
    "prepare_run": "priorflow.run.prepare",
    "run_job": "priorflow.run.execute",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'priorflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
