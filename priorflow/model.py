"""Models: the card of a model directory and a loaded model ready to sample from.

A model directory holds ``card.yaml`` and the checkpoints ``model_best.pt`` / ``model_last.pt``
(plain state dicts of the backbone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from priorflow.denoiser import PreconditionedDenoiser
from priorflow.schedules import Schedule, make_schedule

CARD_NAME = "card.yaml"
CHECKPOINTS = {"best": "model_best.pt", "last": "model_last.pt"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneSpec(_Strict):
    """The backbone to build: ``target`` is ``"module:callable"``, called with ``kwargs``."""

    target: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ScheduleSpec(_Strict):
    """The noise schedule the model was trained with."""

    name: Literal["rectified", "loglinear", "loglogit"] = "rectified"
    sigma_min: float = 1e-3
    sigma_max: float = 1e3


class ModelCard(_Strict):
    """The contents of ``card.yaml``."""

    backbone: BackboneSpec
    blanket_size: int = Field(ge=1, description="K: states per blanket")
    dt_hours: int = Field(ge=1, description="hours between consecutive states")
    state_shape: tuple[int, ...] = Field(min_length=1, description="shape of one latent state")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    denoising_steps: int = Field(default=64, ge=1, description="default number of sampler steps")
    precision: Literal["float32", "float16", "bfloat16"] = "float32"
    archive: str | None = Field(default=None, description="latent archive it was trained on")
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Model:
    """A loaded model: its card and backbone, with the checkpoint it came from.

    ``denoiser(precision)`` gives the preconditioned blanket denoiser
    ``d(x (n, K, *S), sigma (n,), dates (n, K, 4)) -> (n, K, *S)``.
    """

    card: ModelCard
    backbone: nn.Module
    path: Path | None = None
    checkpoint: Path | None = None
    checkpoint_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def blanket_size(self) -> int:
        return self.card.blanket_size

    @property
    def dt_hours(self) -> int:
        return self.card.dt_hours

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.card.state_shape)

    @property
    def schedule(self) -> Schedule:
        spec = self.card.schedule
        return make_schedule(spec.name, spec.sigma_min, spec.sigma_max)

    def denoiser(self, precision: str = "float32") -> PreconditionedDenoiser:
        """The preconditioned denoiser in ``precision`` (shares the backbone's parameters)."""
        return PreconditionedDenoiser(self.backbone, precision).eval()
