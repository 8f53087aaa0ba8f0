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
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.core.schedules import Schedule, make_schedule
from priorflow.errors import ModelError
from priorflow.models.backbones import build_backbone
from priorflow.models.card import ModelCard, one_line
from priorflow.models.formats import ModelSource, open_model_source

__all__ = ["Model", "ModelCheck", "build_backbone", "check_model", "load_model"]


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


def checkpoint_path(path: str | Path, target: str = "best") -> Path:
    """The checkpoint file of ``target`` (``best`` or ``last``) of the model at ``path``.

    Raises :class:`ModelError` when the target is unknown or its file is missing, saying
    whether the other target's file exists.
    """
    return open_model_source(path).checkpoint(target)


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


def _fitted(source: ModelSource, network: nn.Module, file: Path, state: dict) -> None:
    """Raise one line unless ``state`` holds exactly ``network``'s tensors with their shapes."""
    problem = _fit_message(network, state)
    if problem:
        card = source.card
        what = (
            f"backbone {card.backbone.target} with kwargs {card.backbone.kwargs} and state_shape"
            f" {tuple(card.state_shape)}"
            if source.format == "priorflow"
            else f"the backbone Appa builds for lap config K={card.blanket_size}, state"
            f" {tuple(card.state_shape)}"
        )
        raise ModelError(f"checkpoint {file} does not fit {what}: {problem}")


def load_model(
    path: str | Path, target: str = "best", device: str | torch.device = "cpu"
) -> Model:
    """Load the model at ``path``: card, backbone and the ``target`` checkpoint.

    Arguments:
        path: a priorflow model directory (``card.yaml``, ``model_best.pt``/``model_last.pt``)
            or an Appa lap folder (``config.yaml``, ``model_best.pth``/``model_last.pth``).
        target: ``best`` (best validation loss) or ``last`` (end of training).
        device: where the backbone's parameters go.

    Returns:
        The :class:`Model` in eval mode, with the checkpoint's path and sha256.

    Raises:
        ModelError: one line, for every problem with the directory, card or checkpoint.
    """
    source = open_model_source(path)
    file = source.checkpoint(target)
    backbone, network = source.build("cpu")
    state = read_state_dict(file)
    _fitted(source, network, file, state)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(
            f"checkpoint {file} does not fit the backbone: {one_line(error)}"
        ) from None
    problem = getattr(network, "state_problem", None)
    if callable(problem) and (reason := problem()):
        raise ModelError(
            f"checkpoint {file}: {reason}; retrain, or restore the file training wrote"
        )
    backbone.to(device).eval()
    return Model(
        card=source.card,
        backbone=backbone,
        path=source.path,
        checkpoint=file,
        checkpoint_sha256=file_sha256(file),
    )


@dataclass(frozen=True)
class ModelCheck:
    """A model directory checked without loading its weights: card, checkpoint and its hash."""

    card: ModelCard
    checkpoint: Path
    checkpoint_sha256: str
    format: str = "priorflow"


def check_model(path: str | Path, target: str = "best") -> ModelCheck:
    """Check that :func:`load_model` would succeed, without the weights' memory or compute.

    The card is read (a lap's config); the backbone is built on the ``meta`` device (no memory;
    on the CPU if it cannot be built there); the checkpoint is memory-mapped, weights only, and
    must hold exactly the backbone's tensors with their shapes.

    Raises:
        ModelError: one line, as :func:`load_model` would.
    """
    source = open_model_source(path)
    file = source.checkpoint(target)
    try:
        with torch.device("meta"):
            _, network = source.build("meta")
    except ModelError:
        raise
    except Exception:  # a backbone that computes real values when it is built
        _, network = source.build("cpu")
    _fitted(source, network, file, read_state_dict(file, mmap=True))
    return ModelCheck(source.card, file, file_sha256(file), source.format)


def file_sha256(file: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
