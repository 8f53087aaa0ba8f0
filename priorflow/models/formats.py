"""Model formats behind one interface: a priorflow model directory or an Appa lap folder.

:func:`open_model_source` recognises a model by what its folder holds:

========================  =====================================  ==============================
format                    holds                                  card from
========================  =====================================  ==============================
``priorflow``             ``card.yaml``, ``model_best.pt``,       ``card.yaml``
                          ``model_last.pt``
``appa``                  ``config.yaml``, ``model_best.pth``,    the lap's ``config.yaml``
                          ``model_last.pth`` (no ``card.yaml``)   (:mod:`priorflow.models.appa`)
========================  =====================================  ==============================

Either way a :class:`ModelSource` gives the card, the checkpoint of a ``model_target``, and the
backbone with priorflow's call plus the network its checkpoint is the state dict of.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from priorflow.errors import ModelError
from priorflow.models.appa import (
    LAP_CHECKPOINTS,
    LAP_CONFIG,
    AppaBackbone,
    build_lap_network,
    is_lap,
    lap_card,
    read_lap,
)
from priorflow.models.backbones import build_backbone
from priorflow.models.card import CARD_NAME, CHECKPOINTS, ModelCard, read_card

ModelFormat = Literal["priorflow", "appa"]


@dataclass(frozen=True)
class ModelSource:
    """A model on disk, whatever its format: its card, checkpoints and how to build it.

    ``build(device)`` gives ``(backbone, network)``: the backbone priorflow calls as
    ``F(x (n, K, *S), c_noise (n,), dates (n, K, 4))`` and the module the checkpoint is the state
    dict of (the same module for priorflow directories; Appa's network inside the adapter).
    """

    format: ModelFormat
    path: Path
    card: ModelCard
    checkpoints: Mapping[str, str]
    builder: Callable[[str | torch.device], tuple[nn.Module, nn.Module]] = field(repr=False)

    def checkpoint(self, target: str = "best") -> Path:
        """The checkpoint file of ``target`` (``best`` or ``last``); one line if it is missing."""
        if target not in self.checkpoints:
            raise ModelError(f"model_target: {target!r} is not a target; use best or last")
        file = self.path / self.checkpoints[target]
        if file.is_file():
            return file
        other = "last" if target == "best" else "best"
        other_file = self.path / self.checkpoints[other]
        if other_file.is_file():
            hint = f"{other_file.name} exists: use model_target: {other}"
        else:
            hint = (
                f"{other_file.name} is missing too: train the model or copy its checkpoints there"
            )
        raise ModelError(f"model_target: {target}: checkpoint {file} does not exist; {hint}")

    def build(self, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module]:
        return self.builder(device)


def _not_a_model(path: Path) -> ModelError:
    return ModelError(
        f"model_path: {str(path)!r} has no {CARD_NAME} (a priorflow model directory, with"
        f" {CHECKPOINTS['best']}/{CHECKPOINTS['last']}) nor {LAP_CONFIG} with"
        f" {LAP_CHECKPOINTS['best']}/{LAP_CHECKPOINTS['last']} (an Appa lap folder); point"
        " model_path at one"
    )


def model_format(path: str | Path) -> ModelFormat:
    """The format of the model at ``path``; one line when it is neither."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"model_path: {str(path)!r} does not exist; point model_path at a priorflow model"
            " directory or an Appa lap folder"
        )
    if (path.is_file() and path.name == CARD_NAME) or (path / CARD_NAME).is_file():
        return "priorflow"
    if is_lap(path):
        return "appa"
    raise _not_a_model(path)


def open_model_source(path: str | Path) -> ModelSource:
    """The model at ``path`` (a priorflow model directory, its card, or an Appa lap folder).

    Reads the card (or the lap's config) only: no backbone is built, no weights are read.
    """
    path = Path(path).expanduser()
    if model_format(path) == "priorflow":
        directory = path.parent if path.is_file() else path
        card = read_card(directory)

        def build_card_backbone(device: str | torch.device) -> tuple[nn.Module, nn.Module]:
            backbone = build_backbone(card)
            return backbone, backbone

        return ModelSource("priorflow", directory, card, CHECKPOINTS, build_card_backbone)
    lap = read_lap(path)
    card = lap_card(lap)

    def build_appa_backbone(device: str | torch.device) -> tuple[nn.Module, nn.Module]:
        network = build_lap_network(lap, device)
        return AppaBackbone(network), network

    return ModelSource("appa", lap.path, card, LAP_CHECKPOINTS, build_appa_backbone)
