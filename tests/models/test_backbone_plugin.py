"""The worked example of docs/models.md: a backbone registered by a separate package.

``examples/backbone_plugin`` is installed (no network: no build isolation, no dependencies)
into a temporary folder put on the path; its entry point makes ``tiny_mlp`` a backbone a card
may name. A model directory naming it loads and samples; the same card without the package
installed is refused in one line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from priorflow.core.generate import generate_trajectory
from priorflow.errors import ModelError
from priorflow.models.backbones import registered_backbones
from priorflow.models.loading import load_model

EXAMPLE = Path(__file__).parents[2] / "examples" / "backbone_plugin"
CARD = {
    "backbone": {"target": "tiny_mlp", "kwargs": {"blanket_size": 4, "hidden": 16}},
    "blanket_size": 4,
    "dt_hours": 1,
    "state_shape": [2, 3],
    "denoising_steps": 8,
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "backbone_plugin"
    shutil.copytree(EXAMPLE, source)  # a build writes beside its sources: not in the checkout
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def model_dir(path: Path) -> Path:
    path.mkdir()
    (path / "card.yaml").write_text(yaml.safe_dump(CARD))
    return path


def test_a_card_names_the_registered_backbone(installed, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(installed))
    assert registered_backbones()["tiny_mlp"] == "priorflow_tiny_mlp:build_tiny_mlp"
    from priorflow_tiny_mlp import build_tiny_mlp

    directory = model_dir(tmp_path / "model")
    torch.manual_seed(0)
    torch.save(build_tiny_mlp((2, 3), 4, 16).state_dict(), directory / "model_best.pt")
    model = load_model(directory)
    assert type(model.backbone).__name__ == "TinyMLP"
    trajectory = generate_trajectory(model, 10, datetime(2000, 1, 1), seed=1, overlap=2)
    assert tuple(trajectory.latent.shape) == (10, 2, 3)
    assert torch.isfinite(trajectory.latent).all()


def test_without_the_package_the_card_is_refused(tmp_path):
    directory = model_dir(tmp_path / "model")
    torch.save({}, directory / "model_best.pt")
    with pytest.raises(ModelError) as info:
        load_model(directory)
    message = str(info.value)
    assert "'tiny_mlp' is not a registered backbone (registered: exact, reference" in message
    assert "install the package that registers it" in message
