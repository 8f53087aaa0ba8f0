"""Appa lap folders: the card from the lap's config, the backbone from Appa's factory, the
adapter's call, and one line for every way a lap can be wrong."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml

from priorflow.errors import ModelError
from priorflow.models.appa import AppaBackbone, card_standardizes
from priorflow.models.formats import model_format, open_model_source
from priorflow.models.loading import check_model, file_sha256, load_model
from tests.appa_tree import STANDIN, STATE, lap_folder, wrapped_model_dir, write_appa_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_appa_tree(tmp_path_factory.mktemp("appa"))


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """The stand-in ``appa`` importable, its factory calls logged to a file."""
    monkeypatch.syspath_prepend(str(STANDIN))
    log = tmp_path / "factory.log"
    monkeypatch.setenv("APPA_STANDIN_LOG", str(log))
    return log


def error_of(call) -> str:
    with pytest.raises(ModelError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_lap_is_recognised_by_what_it_holds(tree, tmp_path):
    assert model_format(tree) == "appa"
    wrapped = wrapped_model_dir(tree, tmp_path / "wrapped")
    assert model_format(wrapped) == "priorflow"
    (tmp_path / "empty").mkdir()
    message = error_of(lambda: model_format(tmp_path / "empty"))
    assert "has no card.yaml" in message and "an Appa lap folder" in message


def test_the_card_comes_from_the_lap_config(tree):
    card = open_model_source(tree).card
    assert card.blanket_size == 8 and card.dt_hours == 1 and card.state_shape == STATE
    assert (card.schedule.name, card.schedule.sigma_min, card.schedule.sigma_max) == (
        "rectified",
        0.001,
        1000.0,
    )
    assert card.denoising_steps == 16 and card.precision == "float16"
    assert card.archive == "../../../era5.h5"
    assert (tree / card.archive).resolve() == (tree.parents[2] / "era5.h5").resolve()
    assert card.metadata["format"] == "appa" and card_standardizes(card.metadata)
    assert card.metadata["appa"]["backbone"] == {"name": "vit_small", "hid_channels": 8}


def test_load_model_builds_through_appa_factory(tree, standin):
    model = load_model(tree, "best")
    assert isinstance(model.backbone, AppaBackbone)
    assert model.checkpoint == tree / "model_best.pth"
    assert model.checkpoint_sha256 == file_sha256(tree / "model_best.pth")
    calls = [json.loads(line) for line in standin.read_text().splitlines()]
    assert calls == [
        {
            "name": "vit_small",
            "device": "cpu",
            "overrides": {"checkpointing": True},
            "pid": calls[0]["pid"],
            "host": calls[0]["host"],
            "slurm": calls[0]["slurm"],
        }
    ]
    saved = torch.load(tree / "model_best.pth", weights_only=True)
    for key, value in model.backbone.network.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert load_model(tree, "last").checkpoint == tree / "model_last.pth"


def test_the_adapter_calls_appa_as_appa_does(tree, standin, tmp_path):
    """priorflow's preconditioned denoiser around the adapter equals Appa's own Denoiser on the
    flattened blanket, and the same network wrapped in a priorflow model directory."""
    from appa.diffusion import Denoiser

    model = load_model(tree)
    wrapped = load_model(wrapped_model_dir(tree, tmp_path / "wrapped"))
    x = torch.randn(3, 8, *STATE)
    sigma = torch.tensor([0.5, 3.0, 40.0])
    dates = torch.tensor([[[2000, 4, 3, h % 24] for h in range(8)]] * 3)
    ours = model.denoiser("float32")(x, sigma, dates)
    appa = Denoiser(model.backbone.network)(x.reshape(3, -1), sigma[:, None], date=dates)
    torch.testing.assert_close(ours.reshape(3, -1), appa, rtol=1e-6, atol=1e-6)
    assert torch.equal(ours, wrapped.denoiser("float32")(x, sigma, dates))


def test_check_model_builds_on_meta_and_maps_the_checkpoint(tree, standin):
    checked = check_model(tree, "best")
    assert checked.checkpoint == tree / "model_best.pth"
    assert json.loads(standin.read_text().splitlines()[0])["device"] == "meta"


def test_a_lap_whose_k_disagrees_with_its_checkpoint(tmp_path, standin):
    lap = write_appa_tree(tmp_path, blanket_size=6)  # checkpoint of K = 8
    message = error_of(lambda: check_model(lap))
    assert "does not fit" in message and "shape mismatch" in message
    assert "model_best.pth" in message


def test_without_appa_the_error_says_how_to_install(tree, monkeypatch):
    for name in ("appa", "appa.diffusion"):  # import fails, as when it is not installed
        monkeypatch.setitem(sys.modules, name, None)
    message = error_of(lambda: load_model(tree))
    assert "Appa lap" in message and "pip install 'priorflow[appa]'" in message


def test_missing_autoencoder_config(tmp_path, standin):
    lap = write_appa_tree(tmp_path)
    (tmp_path / "ae" / "config.yaml").unlink()
    assert "autoencoder config" in error_of(lambda: load_model(lap))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["train"].pop("blanket_size"), "has no train.blanket_size"),
        (lambda c: c["valid"].pop("denoising_steps"), "has no valid.denoising_steps"),
        (lambda c: c["train"].update(blanket_size=0), "integer from 1 to 10000"),
        (lambda c: c["train"].update(precision="int8"), "train.precision is 'int8'"),
        (lambda c: c["train"].update(noise_schedule="cosine"), "cosine"),
        (lambda c: c.pop("train"), "has no 'train' section"),
    ],
)
def test_bad_lap_configs_are_one_line(tmp_path, change, expected):
    lap = write_appa_tree(tmp_path)
    config = yaml.safe_load((lap / "config.yaml").read_text())
    change(config)
    (lap / "config.yaml").write_text(yaml.safe_dump(config))
    assert expected in error_of(lambda: open_model_source(lap))


def test_lap_without_archive_takes_the_autoencoder_shape(tmp_path):
    lap = write_appa_tree(tmp_path)
    (lap.parents[2] / "era5.h5").unlink()
    assert open_model_source(lap).card.state_shape == STATE  # (4, 8, 3) -> (32, 3)
    assert lap == lap_folder(tmp_path)
