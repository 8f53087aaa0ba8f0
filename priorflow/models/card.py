"""The model card: ``card.yaml`` of a model directory, read and validated without weights.

A model directory holds ``card.yaml`` and the checkpoints ``model_best.pt`` / ``model_last.pt``
(plain state dicts of the backbone). The card says how to build the backbone
(``backbone.target``, ``backbone.kwargs``), the blanket size ``K``, the time step, the state
shape, the noise schedule, the default number of steps, the training precision and the archive
it was trained on. Every problem is a one-line :class:`~priorflow.errors.ModelError` naming the
file and the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from priorflow.atomic import write_text
from priorflow.core.precision import Precision
from priorflow.core.schedules import schedule_class
from priorflow.errors import ModelError
from priorflow.safe_yaml import YAMLRefused, load_yaml

CARD_NAME = "card.yaml"
ModelTarget = Literal["best", "last"]
#: The checkpoint file of each ``model_target``.
CHECKPOINTS: dict[str, str] = {"best": "model_best.pt", "last": "model_last.pt"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneSpec(_Strict):
    """The backbone to build: ``target`` is ``"module:callable"``, called with ``kwargs``."""

    target: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ScheduleSpec(_Strict):
    """The noise schedule the model was trained with."""

    name: str = "rectified"
    sigma_min: float = 1e-3
    sigma_max: float = 1e3

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        schedule_class(value)  # ValueError naming the schedules
        return value


class ModelCard(_Strict):
    """The contents of ``card.yaml``."""

    @field_validator("state_shape")
    @classmethod
    def _bounded_state(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) > 8 or any(n < 1 for n in shape) or math.prod(shape) > 1 << 31:
            raise ValueError("at most 8 dimensions, each >= 1, at most 2**31 values in all")
        return shape

    backbone: BackboneSpec
    blanket_size: int = Field(ge=1, le=10_000, description="K: states per blanket")
    dt_hours: int = Field(ge=1, le=24 * 366, description="hours between consecutive states")
    state_shape: tuple[int, ...] = Field(min_length=1, description="shape of one latent state")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    denoising_steps: int = Field(
        default=64, ge=1, le=10_000, description="default number of sampler steps"
    )
    precision: Precision = "float32"
    archive: str | None = Field(default=None, description="latent archive it was trained on")
    metadata: dict[str, Any] = Field(default_factory=dict)


def one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message to one line."""
    return " ".join(str(text).split())


def find_card(path: str | Path) -> Path:
    """The ``card.yaml`` of a model directory (``path`` may also name the card itself)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"model_path: {str(path)!r} does not exist; point model_path at a model directory"
            f" holding {CARD_NAME} and {CHECKPOINTS['best']}/{CHECKPOINTS['last']}"
        )
    card = path if path.is_file() else path / CARD_NAME
    if not card.is_file():
        raise ModelError(
            f"model_path: {str(path)!r} has no {CARD_NAME}; a model directory holds {CARD_NAME}"
            f" (backbone, blanket_size, dt_hours, state_shape, ...) and its checkpoints"
        )
    return card


def _validation_message(card: Path, error: ValidationError) -> str:
    """One line for the first problem pydantic found in a card, naming the key."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<card>"
    kind = first["type"]
    if kind == "missing":
        return f"model card {card}: missing key {key!r}; add it to {CARD_NAME}"
    if kind == "extra_forbidden":
        parent = first["loc"][:-1]
        allowed = _allowed_keys(parent)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"model card {card}: unknown key {key!r}; remove it{hint}"
    value = first.get("input")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return (
        f"model card {card}: key {key!r} has bad value {value!r}: {one_line(first['msg'])}"
        f"{more}; fix it in {CARD_NAME}"
    )


def _allowed_keys(parent: tuple) -> list[str]:
    """Field names of the card section at ``parent`` (``()`` for the top level)."""
    cls: type[BaseModel] = ModelCard
    for part in parent:
        annotation = cls.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        cls = annotation
    return list(cls.model_fields)


def read_card(path: str | Path) -> ModelCard:
    """Read and validate the card of the model directory ``path`` (no weights are loaded).

    Raises :class:`~priorflow.errors.ModelError` (one line) when the directory or its card is
    missing, the YAML does not parse, or a key is missing, unknown or has a bad value.
    """
    card_path = find_card(path)
    try:
        data = load_yaml(card_path.read_text())
    except YAMLRefused as error:
        raise ModelError(f"model card {card_path}: {error}; fix the file") from None
    except (yaml.YAMLError, ValueError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "parse error"
        raise ModelError(
            f"model card {card_path}: not valid YAML{where} ({one_line(problem)}); fix the file"
        ) from None
    if not isinstance(data, dict):
        raise ModelError(
            f"model card {card_path}: expected a mapping of keys (backbone, blanket_size, ...),"
            f" got {type(data).__name__}; fix the file"
        )
    try:
        return ModelCard.model_validate(data)
    except ValidationError as error:
        raise ModelError(_validation_message(card_path, error)) from None


def write_card(directory: str | Path, card: ModelCard) -> Path:
    """Write ``card`` as ``directory/card.yaml`` atomically (temporary file, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = card.model_dump(mode="json")
    data["state_shape"] = list(card.state_shape)
    return write_text(directory / CARD_NAME, yaml.safe_dump(data, sort_keys=False))
