"""Helpers for the prior-check tests: a small synthetic archive, models, and finished runs.

A run is made the way the flow makes one, without Prefect: config -> plan -> ``create_store`` ->
``generate_trajectory`` per job -> ``write_member`` -> ``aggregate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from priorflow.config import load_config
from priorflow.data.archive import open_archive
from priorflow.data.synthetic_archive import write_synthetic_archive
from priorflow.models.loading import Model, load_model
from priorflow.plan import make_plan
from priorflow.store import aggregate, create_store, open_group, run_provenance, write_member
from tests._runs import direct_trajectory

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "models" / "reference"
# Four start dates at four hours of the day, spread over the archive's first year.
START_DATES = ("2000-03-20 0h", "2000-05-10 6h", "2000-07-01 12h", "2000-09-15 18h")


def write_archive(path: Path, start: str = "2000-01-01", end: str = "2001-12-31") -> Path:
    """The default synthetic world's archive (seed 0) from ``start`` to ``end``."""
    return write_synthetic_archive(path, start, end)


def make_run(
    root: Path,
    model: Model | str | Path,
    archive: Path,
    *,
    run_id: str = "run",
    sizes: str = "48",
    members: int = 4,
    start_dates: Sequence[str] = START_DATES,
    overlap: int = 4,
    steps: int = 16,
    seed: int = 0,
    check: dict | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Path:
    """Generate a finished run under ``root/run_id`` and return the run directory.

    ``transform`` (optional) changes each generated trajectory ``(T0, *S)`` before it is
    written: a way to corrupt a run on purpose.
    """
    if not isinstance(model, Model):
        model = load_model(model)
    config_path = root / f"{run_id}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(
        yaml.safe_dump(
            {
                "model_path": str(model.path),
                "archive": str(archive),
                "diffusion": {"num_steps": steps, "sampler": {"type": "lms"}},
                "trajectory_sizes": sizes,
                "num_samples_per_date": members,
                "start_dates": list(start_dates),
                "blanket_overlap": overlap,
                "precision": "float32",
                "seed": seed,
                "output_dir": str(root),
                "run_id": run_id,
                "check": check or {},
            }
        )
    )
    config = load_config(config_path)
    store_archive = open_archive(archive)
    plan = make_plan(config, model.card, store_archive)
    create_store(plan.run_dir, plan, config, run_provenance(model.checkpoint))
    for job in plan.jobs:
        trajectory = direct_trajectory(model, job)
        latent = trajectory.latent
        if transform is not None:
            latent = transform(latent)
        write_member(plan.run_dir, job, latent, trajectory.record)
    for size in plan.sizes:
        aggregate(plan.run_dir, size.trajectory_size)
    return plan.run_dir


def rewrite_latent(run_dir: Path, group: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replace ``latent`` of ``group`` by ``change(latent)`` in place, as if the model had
    generated that (its members' done marks follow: this is a bad model, not damaged data)."""
    import json

    import zarr

    from priorflow.store.members import digest

    array = zarr.open_array(str(run_dir / "prior.zarr"), path=f"{group}/latent", mode="r+")
    array[...] = change(np.asarray(array[...]))
    for path in (run_dir / "marks" / group).glob("*.json"):
        mark = json.loads(path.read_text())
        values = np.asarray(array[mark["date_index"], mark["member"]], dtype="<f4")
        path.write_text(json.dumps({**mark, "sha256": digest(values)}))


def group_dataset(run_dir: Path, size: int | str):
    """The group as an ``xarray.Dataset``."""
    return open_group(run_dir, size)


# --------------------------------------------------------------------------------------------
# session caches: the archive and the runs are made once per test session and copied by tests
# that change them

_CACHE: dict[str, Path] = {}


def shared_archive(factory) -> Path:
    """A one-year archive (2000) of the default world, made once per session."""
    if "archive" not in _CACHE:
        _CACHE["archive"] = write_archive(
            factory.mktemp("check-archive") / "archive.zarr", "2000-01-01", "2000-12-31"
        )
    return _CACHE["archive"]


def shared_exact_model(factory) -> Path:
    """The exact synthetic-world model directory, made once per session."""
    from priorflow.models.exact import write_exact_model

    if "exact" not in _CACHE:
        _CACHE["exact"] = write_exact_model(factory.mktemp("check-model") / "exact")
    return _CACHE["exact"]


def shared_exact_run(factory) -> Path:
    """4 dates x 4 members x 48 states of the exact model with its card's 64 steps (~10 s)."""
    if "exact-run" not in _CACHE:
        _CACHE["exact-run"] = make_run(
            factory.mktemp("check-runs"),
            shared_exact_model(factory),
            shared_archive(factory),
            run_id="exact",
            steps=64,
        )
    return _CACHE["exact-run"]


def copy_run(run_dir: Path, destination: Path) -> Path:
    """A copy of a run directory (to corrupt without touching the shared one)."""
    import shutil

    return Path(shutil.copytree(run_dir, destination))


def corrupt_model(model: Model, how: str, factor: float = 1.5, seed: int = 0) -> Model:
    """A broken copy of ``model``: every tensor of its state (weights, and fitted statistics
    such as the reference backbone's spectral skip) ``scaled`` by ``factor``, or the entries of
    every such tensor ``shuffled`` (a fixed permutation per tensor)."""
    import copy
    import dataclasses

    backbone = copy.deepcopy(model.backbone)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in backbone.state_dict().values():
            if not parameter.is_floating_point():
                continue
            if how == "scaled":
                parameter.mul_(factor)
            elif how == "shuffled":
                flat = parameter.reshape(-1)
                flat.copy_(flat[torch.randperm(flat.numel(), generator=generator)])
            else:
                raise ValueError(f"corrupt_model: how={how!r} is not scaled or shuffled")
    return dataclasses.replace(model, backbone=backbone)


def shared_two_year_archive(factory) -> Path:
    """The default world's archive over 2000-2001, made once per session (the learned verdict
    reads windows from every year)."""
    if "archive-2y" not in _CACHE:
        _CACHE["archive-2y"] = write_archive(factory.mktemp("check-archive-2y") / "archive.zarr")
    return _CACHE["archive-2y"]


def learned_verdict(model: Model, archive: Path, *, seed: int = 0, dates=START_DATES, **check):
    """The learned verdict of ``model`` at ``dates`` (no run needed): the check's own blanket
    sampling with a run spec of seed ``seed``; ``check`` overrides ``check:`` settings."""
    from priorflow.config import CheckConfig
    from priorflow.core.dates import parse_start_date
    from priorflow.evaluation.learned import check_blankets
    from priorflow.plan import SamplingSpec

    spec = SamplingSpec(
        model_path=str(model.path),
        model_target="best",
        card=model.card,
        num_steps=32,
        sampler="lms",
        sampler_config={},
        blanket_overlap=0,
        fold_mode="symmetrical",
        precision="float32",
        seed=seed,
    )
    attrs = {**spec.attrs(), "checkpoint_sha256": None}
    starts = [parse_start_date(d) for d in dates]
    return check_blankets(attrs, starts, open_archive(archive), CheckConfig(**check), model)
