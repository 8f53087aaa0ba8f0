"""Helpers for the config, plan, store and export tests: a model card on disk and small runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from priorflow.config import RunConfig, load_config
from priorflow.core.generate import Trajectory, generate_trajectory
from priorflow.models.card import CARD_NAME, CHECKPOINTS, ModelCard
from priorflow.plan import Job, RunPlan, make_plan
from priorflow.run.prepare import PreparedRun, prepare_run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# The original documentation's example config, verbatim.
ORIGINAL_EXAMPLE = """\
model_path: /path/to/model
model_target: best
diffusion:
  num_steps: 64
  sampler:
    type: lms
    config:
      order: 3
trajectory_sizes: "72"
num_samples_per_date: 2
start_dates: ["2000-04-03 0h", "2000-04-20 12h"]
blanket_overlap: 4
precision: float16
hardware:
  backend: slurm
  account: my_account
  gpus_per_node: 4
  gen:
    cpus: 8
    ram: "64GB"
    time: "6:00:00"
    partition: gpu
    gpus: 1
  aggregate:
    cpus: 4
    ram: "32GB"
    time: "1:00:00"
    partition: cpu
"""


def make_card(**changes: object) -> ModelCard:
    """A small card: K=8, dt=1 h, states (2, 3, 4), 16 steps, trained in float32."""
    data = {
        "backbone": {"target": "priorflow.models.exact:exact_backbone", "kwargs": {}},
        "blanket_size": 8,
        "dt_hours": 1,
        "state_shape": [2, 3, 4],
        "denoising_steps": 16,
        "precision": "float32",
    }
    data.update(changes)
    return ModelCard.model_validate(data)


def write_model_dir(directory: Path, card: ModelCard | None = None) -> Path:
    """A model directory: ``card.yaml`` and the checkpoints of its (exact, tiny) backbone."""
    import torch

    from priorflow.models.loading import build_backbone

    directory.mkdir(parents=True, exist_ok=True)
    card = card or make_card()
    (directory / CARD_NAME).write_text(yaml.safe_dump(card.model_dump(mode="json")))
    state = build_backbone(card).state_dict()
    for name in CHECKPOINTS.values():
        torch.save(state, directory / name)
    return directory


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def small_run(
    tmp_path: Path,
    *overrides: str,
    card: ModelCard | None = None,
    checkpoint_sha256: str | None = None,
) -> tuple[RunConfig, ModelCard, RunPlan]:
    """The original example made small: sizes 10 and 12 (K=8, O=4), 2 dates x 2 members."""
    card = card or make_card()
    config_path = write_config(tmp_path / "config" / "run.yaml", ORIGINAL_EXAMPLE)
    items = [
        f"model_path={tmp_path / 'model'}",
        f"output_dir={tmp_path / 'runs'}",
        "run_id=test-run",
        'trajectory_sizes="10,12"',
        "hardware.backend=local",
        *overrides,
    ]
    config = load_config(config_path, items)
    return config, card, make_plan(config, card, checkpoint_sha256=checkpoint_sha256)


def tree_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``, by relative path."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def prepared_run(
    config_path: str | Path, *overrides: str, run_id: str | None = None, **options: object
) -> PreparedRun:
    """``prepare_run`` of the config at ``config_path`` loaded as the command line loads it."""
    from flows.run_config import load_run_config

    return prepare_run(load_run_config(config_path, overrides, run_id), **options)


def direct_trajectory(model: object, job: Job, devices: tuple[str, ...] = ("cpu",)) -> Trajectory:
    """The job's trajectory from a direct call of ``generate_trajectory`` with its spec."""
    spec = job.spec
    return generate_trajectory(
        model,
        job.size,
        job.start,
        job.seed,
        overlap=spec.blanket_overlap,
        sampler=spec.sampler,
        sampler_config=dict(spec.sampler_config),
        steps=spec.num_steps,
        fold=spec.fold_mode,
        precision=spec.precision,
        blanket_batch=spec.blanket_batch,
        devices=list(devices),
    )


def member_chunk(run_dir: Path, group: str, date_index: int, member: int) -> Path:
    """The file that holds one member's chunk of ``latent`` (one chunk per member)."""
    import zarr

    from priorflow.store import store_path

    array = zarr.open_array(str(store_path(run_dir)), path=f"{group}/latent", mode="r")
    key = array.metadata.encode_chunk_key((date_index, member, *([0] * (array.ndim - 2))))
    return store_path(run_dir) / group / "latent" / key


def damage_members(run_dir: Path, group: str) -> list[tuple[int, int]]:
    """The three attacks on a finished run: delete member (0, 0)'s chunk, write zeros over
    member (0, 1), swap the chunks of members (1, 0) and (1, 1). Returns the members hit."""
    import numpy as np
    import zarr

    from priorflow.store import store_path

    member_chunk(run_dir, group, 0, 0).unlink()
    array = zarr.open_array(str(store_path(run_dir)), path=f"{group}/latent", mode="r+")
    array[0, 1] = np.zeros(array.shape[2:], dtype=array.dtype)
    a, b = member_chunk(run_dir, group, 1, 0), member_chunk(run_dir, group, 1, 1)
    first = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(first)
    return [(0, 0), (0, 1), (1, 0), (1, 1)]
