"""Model directories for tests: a small reference-backbone card and its checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from priorflow.errors import ModelError
from priorflow.models.card import CARD_NAME, CHECKPOINTS
from priorflow.models.loading import load_model
from priorflow.models.reference import ReferenceBackbone

SHAPE = (2, 4, 8)
KWARGS = {"channels": [4, 8], "embedding": 8}


def card_dict(**changes) -> dict:
    card = {
        "backbone": {
            "target": "priorflow.models.reference:ReferenceBackbone",
            "kwargs": dict(KWARGS),
        },
        "blanket_size": 4,
        "dt_hours": 1,
        "state_shape": list(SHAPE),
        "schedule": {"name": "rectified", "sigma_min": 1e-3, "sigma_max": 1e3},
        "denoising_steps": 8,
        "precision": "float32",
        "archive": None,
        "metadata": {"note": "test"},
    }
    card.update(changes)
    return card


def make_dir(path: Path, card: dict | str | None = None, targets=("best", "last")) -> Path:
    """A model directory with a card and checkpoints of a freshly initialised backbone."""
    path.mkdir(parents=True, exist_ok=True)
    card = card_dict() if card is None else card
    text = card if isinstance(card, str) else yaml.safe_dump(card)
    (path / CARD_NAME).write_text(text)
    torch.manual_seed(0)
    state = ReferenceBackbone(SHAPE, **KWARGS).state_dict()
    for target in targets:
        torch.save(state, path / CHECKPOINTS[target])
    return path


def load_error(path: Path, target: str = "best") -> str:
    with pytest.raises(ModelError) as info:
        load_model(path, target)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------ success
