"""Models: the card of a model directory and a loaded model ready to sample from.

A model directory holds ``card.yaml`` and the checkpoints ``model_best.pt`` / ``model_last.pt``
(plain state dicts of the backbone).

- :func:`read_card` reads and validates the card (no weights);
- :func:`load_model` builds the backbone named by ``backbone.target`` (``"module:callable"``,
  called with ``backbone.kwargs`` and, when it names that parameter, ``state_shape``), loads
  the chosen checkpoint with ``torch.load(weights_only=True)`` (no code runs from a checkpoint)
  and ``load_state_dict(strict=True)``, and records the checkpoint's sha256.

Every problem with a directory, card or checkpoint is a one-line
:class:`~priorflow.errors.ModelError` naming the path or key and the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from priorflow.denoiser import PreconditionedDenoiser
from priorflow.errors import ModelError, PriorflowError
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


# ---------------------------------------------------------------------------------------------
# Loading a model directory
# ---------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message to one line."""
    return " ".join(str(text).split())


def _card_path(path: str | Path) -> Path:
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
        f"model card {card}: key {key!r} has bad value {value!r}: {_one_line(first['msg'])}"
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
    card_path = _card_path(path)
    try:
        data = yaml.safe_load(card_path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "parse error"
        raise ModelError(
            f"model card {card_path}: not valid YAML{where} ({_one_line(problem)}); fix the file"
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


def resolve_target(target: str) -> Callable[..., nn.Module]:
    """Import the callable named by ``"module:callable"`` (``callable`` may be dotted)."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute or ":" in attribute:
        raise ModelError(
            f"backbone.target: {target!r} is not 'module:callable'; use e.g."
            " 'priorflow.reference:ReferenceBackbone'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise ModelError(
                f"backbone.target: module {module_name!r} of {target!r} is not found; install it"
                " or fix the module path"
            ) from None
        raise ModelError(
            f"backbone.target: importing {module_name!r} failed: {_one_line(error)}; install"
            " what it needs"
        ) from None
    except Exception as error:
        raise ModelError(
            f"backbone.target: importing {module_name!r} failed: {type(error).__name__}:"
            f" {_one_line(error)}"
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(
                f"backbone.target: module {module_name!r} has no attribute {attribute!r};"
                " fix the name after ':'"
            ) from None
    if not callable(obj):
        raise ModelError(f"backbone.target: {target!r} is not callable; name a class or function")
    return obj


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` names a keyword parameter ``name`` (``**kwargs`` does not count)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind in (
        parameter.POSITIONAL_OR_KEYWORD,
        parameter.KEYWORD_ONLY,
    )


def build_backbone(card: ModelCard) -> nn.Module:
    """Build the (untrained) backbone named by ``card.backbone``.

    ``card.state_shape`` is passed as the keyword ``state_shape`` when the callable names that
    parameter and the card's ``backbone.kwargs`` do not set it (if they do, the two must agree). The
    backbone validates the shape at construction; a rejection is a one-line ``ModelError``.
    """
    target = card.backbone.target
    factory = resolve_target(target)
    kwargs = dict(card.backbone.kwargs)
    shape = tuple(card.state_shape)
    if "state_shape" in kwargs:
        if tuple(kwargs["state_shape"]) != shape:
            raise ModelError(
                f"backbone.kwargs.state_shape: {tuple(kwargs['state_shape'])} differs from the"
                f" card's state_shape {shape}; remove it from kwargs or make them equal"
            )
        kwargs["state_shape"] = shape
    elif _accepts(factory, "state_shape"):
        kwargs["state_shape"] = shape
    try:
        backbone = factory(**kwargs)
    except TypeError as error:
        raise ModelError(
            f"backbone.kwargs: {target} does not accept {sorted(card.backbone.kwargs)}:"
            f" {_one_line(error)}; fix the kwargs in {CARD_NAME}"
        ) from None
    except (ValueError, PriorflowError) as error:
        raise ModelError(
            f"state_shape: backbone {target} rejects state_shape {shape} with kwargs"
            f" {card.backbone.kwargs}: {_one_line(error)}"
        ) from None
    if not isinstance(backbone, nn.Module):
        raise ModelError(
            f"backbone.target: {target} returned {type(backbone).__name__}, not a torch"
            " nn.Module; name a callable that builds the network"
        )
    return backbone


def checkpoint_path(path: str | Path, target: str = "best") -> Path:
    """The checkpoint file of ``target`` (``best`` or ``last``) in the model directory ``path``.

    Raises :class:`ModelError` when the target is unknown or its file is missing, saying
    whether the other target's file exists.
    """
    if target not in CHECKPOINTS:
        raise ModelError(f"model_target: {target!r} is not a target; use best or last")
    directory = _card_path(path).parent
    file = directory / CHECKPOINTS[target]
    if file.is_file():
        return file
    other = "last" if target == "best" else "best"
    other_file = directory / CHECKPOINTS[other]
    if other_file.is_file():
        hint = f"{other_file.name} exists: use model_target: {other}"
    else:
        hint = f"{other_file.name} is missing too: train the model or copy its checkpoints there"
    raise ModelError(f"model_target: {target}: checkpoint {file} does not exist; {hint}")


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Load a plain state dict with ``torch.load(weights_only=True)``; no code runs from it."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise ModelError(
                f"checkpoint {file}: not a readable torch checkpoint (it does not unpickle as"
                " tensors); re-save it with torch.save(backbone.state_dict(), path)"
            ) from None
        what = f" ({found.group(1)})"
        raise ModelError(
            f"checkpoint {file}: refused, it holds pickled Python objects{what} and no code may"
            " run from a checkpoint; save a plain state dict: torch.save(backbone.state_dict(),"
            " path)"
        ) from None
    except Exception as error:
        raise ModelError(
            f"checkpoint {file}: not a readable torch checkpoint ({type(error).__name__}:"
            f" {_one_line(error)[:120]}); re-save it with torch.save(backbone.state_dict(), path)"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        if isinstance(state, dict):
            bad = next(
                (k for k, v in state.items() if not isinstance(v, torch.Tensor)), "<non-str key>"
            )
            what = f"a dict whose entry {bad!r} is {type(state.get(bad)).__name__}, not a tensor"
        else:
            what = type(state).__name__
        raise ModelError(
            f"checkpoint {file}: not a plain state dict (found {what}); save"
            " backbone.state_dict() alone"
        )
    return state


def _fit_message(backbone: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """One line summarising why ``state`` does not fit ``backbone`` (``None`` if it fits)."""
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = []
    for label, items in (
        ("missing key", missing),
        ("unexpected key", unexpected),
        ("shape mismatch (checkpoint vs backbone)", shapes),
    ):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            parts.append(f"{len(items)} {label}{'s' if len(items) > 1 else ''}: {shown}")
    return "; ".join(parts) or None


def load_model(
    path: str | Path, target: str = "best", device: str | torch.device = "cpu"
) -> Model:
    """Load the model directory ``path``: card, backbone and the ``target`` checkpoint.

    Arguments:
        path: model directory holding ``card.yaml`` and ``model_best.pt``/``model_last.pt``.
        target: ``best`` (best validation loss) or ``last`` (end of training).
        device: where the backbone's parameters go.

    Returns:
        The :class:`Model` in eval mode, with the checkpoint's path and sha256.

    Raises:
        ModelError: one line, for every problem with the directory, card or checkpoint.
    """
    card_path = _card_path(path)
    card = read_card(card_path)
    file = checkpoint_path(card_path, target)
    backbone = build_backbone(card)
    state = read_state_dict(file)
    problem = _fit_message(backbone, state)
    if problem:
        raise ModelError(
            f"checkpoint {file} does not fit backbone {card.backbone.target} with kwargs"
            f" {card.backbone.kwargs} and state_shape {tuple(card.state_shape)}: {problem}"
        )
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(
            f"checkpoint {file} does not fit the backbone: {_one_line(error)}"
        ) from None
    backbone.to(device).eval()
    return Model(
        card=card,
        backbone=backbone,
        path=card_path.parent,
        checkpoint=file,
        checkpoint_sha256=file_sha256(file),
        extra={"target": target},
    )


def file_sha256(file: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_card(directory: str | Path, card: ModelCard) -> Path:
    """Write ``card`` as ``directory/card.yaml`` atomically (temporary file, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = card.model_dump(mode="json")
    data["state_shape"] = list(card.state_shape)
    target = directory / CARD_NAME
    temporary = target.with_suffix(".yaml.tmp")
    temporary.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(temporary, target)
    return target
