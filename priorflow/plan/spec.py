"""The one record of a run's sampling settings: :class:`SamplingSpec`.

Built once by the planner (:func:`priorflow.plan.planner.make_plan`) from the run config and the
model card, with every default resolved (``diffusion.num_steps: null`` is the card's
``denoising_steps``, ``precision: null`` its training precision); carried by every job; written
once into the store's attributes under the config's own key names (:meth:`SamplingSpec.attrs`);
read back and compared when a run is resumed (:func:`spec_differences`).

The walk of one setting, ``blanket_overlap``: the YAML key -> ``RunConfig.blanket_overlap`` ->
``SamplingSpec.blanket_overlap`` (the planner checks it against the model's ``K`` with a
:class:`~priorflow.core.blanket.BlanketPlan` per size) -> ``Job.spec`` -> :meth:`SamplingSpec.sample`
-> ``generate_trajectories(overlap=...)`` -> the blanket fold; and the store's ``blanket_overlap``
attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import torch

from priorflow.core.generate import SamplingModel, Trajectory, generate_trajectories
from priorflow.models.card import ModelCard

#: Keys that do not change the samples (a resume may change them): how the work is batched.
EXECUTION_KEYS = ("blanket_batch", "members_per_task")


@dataclass(frozen=True)
class SamplingSpec:
    """How every trajectory of a run is sampled: everything but a job's size, start and seed.

    Attributes (config key in brackets where it differs):
        model_path, model_target: the model directory and checkpoint.
        checkpoint_sha256: the checkpoint's hash (None when not known).
        card: the model card (blanket size ``K``, ``dt_hours``, state shape, schedule...).
        num_steps [diffusion.num_steps], sampler [diffusion.sampler.type], sampler_config
            [diffusion.sampler.config]: resolved (defaults filled in).
        blanket_overlap, fold_mode, precision (resolved), seed, blanket_batch,
            members_per_task.
    """

    model_path: str
    model_target: str
    card: ModelCard
    num_steps: int
    sampler: str
    sampler_config: Mapping[str, Any]
    blanket_overlap: int
    fold_mode: str
    precision: str
    seed: int
    blanket_batch: int | None = None
    checkpoint_sha256: str | None = field(default=None)
    members_per_task: int = 1

    @property
    def blanket_size(self) -> int:
        """``K``, the model's blanket size."""
        return self.card.blanket_size

    @property
    def dt_hours(self) -> int:
        """Hours between states, the model's."""
        return self.card.dt_hours

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one latent state, the model's."""
        return tuple(int(n) for n in self.card.state_shape)

    def sample(
        self,
        model: SamplingModel,
        trajectory_size: int,
        starts: Sequence[datetime],
        seeds: Sequence[int],
        *,
        devices: Sequence[str | torch.device] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Trajectory]:
        """Trajectories of one size with these settings, one per ``(start, seed)``, sampled as
        one batch (:func:`~priorflow.core.generate.generate_trajectories`)."""
        return generate_trajectories(
            model,
            trajectory_size,
            starts,
            seeds,
            overlap=self.blanket_overlap,
            sampler=self.sampler,
            sampler_config=dict(self.sampler_config),
            steps=self.num_steps,
            fold=self.fold_mode,
            precision=self.precision,
            blanket_batch=self.blanket_batch,
            devices=devices,
            progress=progress,
        )

    def attrs(self) -> dict[str, Any]:
        """The settings as JSON-able store attributes, under the run config's key names
        (``diffusion: {num_steps, sampler: {type, config}}``), the model's card under ``card``."""
        return {
            "model_path": self.model_path,
            "model_target": self.model_target,
            "checkpoint_sha256": self.checkpoint_sha256,
            "card": self.card.model_dump(mode="json"),
            "diffusion": {
                "num_steps": self.num_steps,
                "sampler": {"type": self.sampler, "config": dict(self.sampler_config)},
            },
            "blanket_overlap": self.blanket_overlap,
            "fold_mode": self.fold_mode,
            "precision": self.precision,
            "seed": self.seed,
            "blanket_batch": self.blanket_batch,
            "members_per_task": self.members_per_task,
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> SamplingSpec:
        """The spec a store recorded (:meth:`attrs`); the card is validated again.

        Raises ``KeyError`` / ``pydantic.ValidationError`` for attributes that are not a spec.
        """
        diffusion = attrs["diffusion"]
        return cls(
            model_path=str(attrs["model_path"]),
            model_target=str(attrs["model_target"]),
            card=ModelCard.model_validate(attrs["card"]),
            num_steps=int(diffusion["num_steps"]),
            sampler=str(diffusion["sampler"]["type"]),
            sampler_config=dict(diffusion["sampler"]["config"]),
            blanket_overlap=int(attrs["blanket_overlap"]),
            fold_mode=str(attrs["fold_mode"]),
            precision=str(attrs["precision"]),
            seed=int(attrs["seed"]),
            blanket_batch=attrs.get("blanket_batch"),
            checkpoint_sha256=attrs.get("checkpoint_sha256"),
            members_per_task=int(attrs.get("members_per_task") or 1),
        )


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)``: the dotted key of every leaf."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, dotted + ".")
        else:
            yield dotted, value


def spec_differences(stored: Mapping[str, Any], spec: SamplingSpec) -> list[tuple[str, Any, Any]]:
    """``(dotted key, stored value, this spec's value)`` for each setting that would change the
    samples of a run whose store holds ``stored`` (its attributes).

    The checkpoint hashes are compared when both are known; then a moved model directory
    (another ``model_path``, the same checkpoint) is the same model. Execution settings
    (:data:`EXECUTION_KEYS`) may change.
    """
    new = spec.attrs()
    old = {key: stored.get(key) for key in new}
    same_checkpoint = bool(old["checkpoint_sha256"]) and bool(new["checkpoint_sha256"])
    if not same_checkpoint:
        old.pop("checkpoint_sha256")
        new.pop("checkpoint_sha256")
    elif old["checkpoint_sha256"] == new["checkpoint_sha256"]:
        old.pop("model_path")
        new.pop("model_path")
    for key in EXECUTION_KEYS:
        old.pop(key)
        new.pop(key)
    stored_leaves = dict(flatten(old))
    new_leaves = dict(flatten(new))
    keys = [*new_leaves, *(key for key in stored_leaves if key not in new_leaves)]
    return [
        (key, stored_leaves.get(key), new_leaves.get(key))
        for key in keys
        if _normal(stored_leaves.get(key)) != _normal(new_leaves.get(key))
    ]


def _normal(value: Any) -> Any:
    """Compare lists and tuples alike (JSON has only lists)."""
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    return value
