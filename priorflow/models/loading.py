"""Loading a model directory: the backbone its card names, with the chosen checkpoint.

:func:`load_model` builds the backbone named by ``backbone.target`` (a registered backbone or
an ``nn.Module`` class, :mod:`priorflow.models.backbones`; called with ``backbone.kwargs`` and,
when it names that parameter, ``state_shape``), loads the
chosen checkpoint with ``torch.load(weights_only=True)`` (no code runs from a checkpoint) and
``load_state_dict(strict=True)``, and records the checkpoint's sha256. Every problem is a
one-line :class:`~priorflow.errors.ModelError` naming the path or key and the fix.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.core.schedules import Schedule, make_schedule
from priorflow.errors import ModelError, PriorflowError
from priorflow.models.backbones import resolve_target
from priorflow.models.card import (
    CARD_NAME,
    CHECKPOINTS,
    ModelCard,
    find_card,
    one_line,
    read_card,
)


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

    @property
    def default_steps(self) -> int:
        """The card's ``denoising_steps``: the sampler steps when a run gives none."""
        return self.card.denoising_steps

    @property
    def trained_precision(self) -> str:
        """The card's ``precision``: the precision a run samples in when it gives none."""
        return self.card.precision

    def denoiser(self, precision: str = "float32") -> PreconditionedDenoiser:
        """The preconditioned denoiser in ``precision`` (shares the backbone's parameters)."""
        return PreconditionedDenoiser(self.backbone, precision).eval()


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
            f" {one_line(error)}; fix the kwargs in {CARD_NAME}"
        ) from None
    except (ValueError, PriorflowError) as error:
        raise ModelError(
            f"state_shape: backbone {target} rejects state_shape {shape} with kwargs"
            f" {card.backbone.kwargs}: {one_line(error)}"
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
    directory = find_card(path).parent
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


def read_state_dict(file: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load a plain state dict with ``torch.load(weights_only=True)``; no code runs from it.

    ``mmap``: map the tensors from the file instead of reading them (to check a checkpoint of
    any size without its memory); a checkpoint in torch's legacy format is read instead.
    """
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as error:
            if not mmap or "mmap" not in str(error):
                raise
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
            f" {one_line(error)[:120]}); re-save it with torch.save(backbone.state_dict(), path)"
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
    card_path = find_card(path)
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
            f"checkpoint {file} does not fit the backbone: {one_line(error)}"
        ) from None
    backbone.to(device).eval()
    return Model(
        card=card,
        backbone=backbone,
        path=card_path.parent,
        checkpoint=file,
        checkpoint_sha256=file_sha256(file),
    )


@dataclass(frozen=True)
class ModelCheck:
    """A model directory checked without loading its weights: card, checkpoint and its hash."""

    card: ModelCard
    checkpoint: Path
    checkpoint_sha256: str


def check_model(path: str | Path, target: str = "best") -> ModelCheck:
    """Check that :func:`load_model` would succeed, without the weights' memory or compute.

    The card is read; its backbone is built on the ``meta`` device (no memory; on the CPU if it
    cannot be built there); the checkpoint is memory-mapped, weights only, and must hold exactly
    the backbone's tensors with their shapes.

    Raises:
        ModelError: one line, as :func:`load_model` would.
    """
    card_path = find_card(path)
    card = read_card(card_path)
    file = checkpoint_path(card_path, target)
    try:
        with torch.device("meta"):
            backbone = build_backbone(card)
    except ModelError:
        raise
    except Exception:  # a backbone that computes real values when it is built
        backbone = build_backbone(card)
    problem = _fit_message(backbone, read_state_dict(file, mmap=True))
    if problem:
        raise ModelError(
            f"checkpoint {file} does not fit backbone {card.backbone.target} with kwargs"
            f" {card.backbone.kwargs} and state_shape {tuple(card.state_shape)}: {problem}"
        )
    return ModelCheck(card, file, file_sha256(file))


def file_sha256(file: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
