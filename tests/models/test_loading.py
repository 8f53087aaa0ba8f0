"""Loading a model directory: the backbone, the checkpoint, every loader error, and a
train-save-load-sample round trip."""

from __future__ import annotations

import collections
from datetime import datetime

import numpy as np
import pytest
import torch

from priorflow.models.card import CARD_NAME, ModelCard
from priorflow.models.loading import build_backbone, file_sha256, load_model
from priorflow.models.reference import ReferenceBackbone
from tests.model_dirs import KWARGS, SHAPE, card_dict, load_error, make_dir

TARGET = "priorflow.models.reference:ReferenceBackbone"


def test_load_model(tmp_path):
    directory = make_dir(tmp_path / "m")
    model = load_model(directory)
    assert isinstance(model.backbone, ReferenceBackbone)
    assert not model.backbone.training
    assert model.state_shape == SHAPE
    assert model.blanket_size == 4
    assert model.card.metadata == {"note": "test"}
    assert model.checkpoint == directory / "model_best.pt"
    assert model.checkpoint_sha256 == file_sha256(directory / "model_best.pt")
    expected = torch.load(directory / "model_best.pt", weights_only=True)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, expected[key])
    # the card file itself is accepted as the path, and ``last`` picks the other checkpoint
    assert load_model(directory / CARD_NAME, "last").checkpoint == directory / "model_last.pt"


def test_state_shape_comes_from_the_card(tmp_path):
    card = ModelCard.model_validate(card_dict())
    assert build_backbone(card).state_shape == SHAPE


# ------------------------------------------------------------------------ errors, one by one


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("priorflow.models.reference.ReferenceBackbone", "nor 'module:Class'"),
        ("unet", "nor 'module:Class'"),
        ("priorflow.nothere:Backbone", "module 'priorflow.nothere'"),
        ("priorflow.models.reference:NoSuchBackbone", "has no attribute 'NoSuchBackbone'"),
        ("priorflow.models.reference:_MONTH_OFFSETS", "neither an nn.Module subclass"),
        ("priorflow.models.reference:date_features", "neither an nn.Module subclass"),
    ],
)
def test_bad_target(tmp_path, target, expected):
    card = card_dict(backbone={"target": target, "kwargs": {}})
    message = load_error(make_dir(tmp_path / "m", card=card))
    assert expected in message and "backbone.target" in message


def test_target_that_builds_no_module(tmp_path):
    card = card_dict(backbone={"target": "collections:OrderedDict", "kwargs": {}})
    assert "neither an nn.Module subclass" in load_error(make_dir(tmp_path / "m", card=card))
    assert collections.OrderedDict  # the target is real


def test_a_card_cannot_run_code(tmp_path):
    """Attack: ``target: "os:system"`` with ``kwargs: {command: ...}`` ran a shell command when
    the model was loaded. Only registered factories and nn.Module classes are called now."""
    proof = tmp_path / "ran"
    card = card_dict(backbone={"target": "os:system", "kwargs": {"command": f"touch {proof}"}})
    message = load_error(make_dir(tmp_path / "m", card=card))
    assert "'os:system' is neither an nn.Module subclass nor a backbone registered" in message
    assert "it is not called" in message and not proof.exists()


def test_registered_backbones_by_name_and_by_path(tmp_path):
    from priorflow.models.backbones import registered_backbones, resolve_target
    from priorflow.models.exact import exact_backbone
    from priorflow.models.reference import ReferenceBackbone

    assert registered_backbones() == {
        "exact": "priorflow.models.exact:exact_backbone",
        "reference": "priorflow.models.reference:ReferenceBackbone",
    }
    assert resolve_target("exact") is exact_backbone
    assert resolve_target("priorflow.models.exact:exact_backbone") is exact_backbone
    assert resolve_target("reference") is ReferenceBackbone
    card = card_dict(backbone={"target": "reference", "kwargs": dict(KWARGS)})
    assert isinstance(load_model(make_dir(tmp_path / "m", card=card)).backbone, ReferenceBackbone)


def test_bad_backbone_kwargs(tmp_path):
    card = card_dict(
        backbone={"target": "priorflow.models.reference:ReferenceBackbone", "kwargs": {"widht": 3}}
    )
    message = load_error(make_dir(tmp_path / "m", card=card))
    assert "backbone.kwargs" in message and "widht" in message


def test_state_shape_the_backbone_rejects(tmp_path):
    card = card_dict(state_shape=[2, 5, 8])  # H = 5 cannot be halved
    message = load_error(make_dir(tmp_path / "m", card=card))
    assert message.startswith("state_shape:") and "(2, 5, 8)" in message
    assert "divisible" in message


def test_state_shape_of_wrong_rank(tmp_path):
    card = card_dict(state_shape=[2, 4])
    assert "is not (C, H, W)" in load_error(make_dir(tmp_path / "m", card=card))


def test_missing_checkpoint_other_exists(tmp_path):
    directory = make_dir(tmp_path / "m", targets=("last",))
    message = load_error(directory, "best")
    assert str(directory / "model_best.pt") in message
    assert "use model_target: last" in message


def test_missing_checkpoint_other_missing_too(tmp_path):
    directory = make_dir(tmp_path / "m", targets=())
    message = load_error(directory, "last")
    assert str(directory / "model_last.pt") in message and "missing too" in message


def test_unknown_target_name(tmp_path):
    message = load_error(make_dir(tmp_path / "m"), "final")
    assert "model_target: 'final'" in message


class Payload:
    """Stands for any Python object a malicious checkpoint could carry."""

    def __reduce__(self):
        return (print, ("code ran from a checkpoint",))


def test_pickled_object_is_refused(tmp_path, capsys):
    directory = make_dir(tmp_path / "m")
    state = torch.load(directory / "model_best.pt", weights_only=True)
    torch.save({**state, "payload": Payload()}, directory / "model_best.pt")
    message = load_error(directory)
    assert "refused" in message and "no code may run from a checkpoint" in message
    assert "code ran" not in capsys.readouterr().out


def test_pickled_module_is_refused(tmp_path):
    directory = make_dir(tmp_path / "m")
    torch.save(ReferenceBackbone(SHAPE, **KWARGS), directory / "model_best.pt")
    assert "refused" in load_error(directory)


def test_unreadable_checkpoint(tmp_path):
    directory = make_dir(tmp_path / "m")
    (directory / "model_best.pt").write_bytes(b"not a checkpoint at all")
    assert "not a readable torch checkpoint" in load_error(directory)


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    directory = make_dir(tmp_path / "m")
    state = torch.load(directory / "model_best.pt", weights_only=True)
    torch.save({"model": state, "step": 3}, directory / "model_best.pt")
    message = load_error(directory)
    assert "not a plain state dict" in message and "'model'" in message


def test_state_dict_with_missing_and_unexpected_keys(tmp_path):
    directory = make_dir(tmp_path / "m")
    state = torch.load(directory / "model_best.pt", weights_only=True)
    state.pop("conv_out.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, directory / "model_best.pt")
    message = load_error(directory)
    assert "does not fit" in message
    assert "1 missing key: conv_out.weight" in message
    assert "1 unexpected key: extra.weight" in message


def test_state_dict_of_other_shapes(tmp_path):
    directory = make_dir(tmp_path / "m")
    other = ReferenceBackbone(SHAPE, channels=[6, 8], embedding=8).state_dict()
    torch.save(other, directory / "model_best.pt")
    message = load_error(directory)
    assert "shape mismatch" in message and "conv_in.weight" in message


# ------------------------------------------------------------------------ round trip


def test_train_save_load_sample_round_trip(tmp_path):
    from priorflow.core.generate import generate_trajectory
    from priorflow.models.training import TrainConfig, TrainingData, train

    rng = np.random.default_rng(0)
    times = np.datetime64("2000-01-01T00", "ns") + np.arange(24 * 12) * np.timedelta64(1, "h")
    states = rng.standard_normal((len(times), *SHAPE)).astype(np.float32)
    config = TrainConfig(
        steps=6, batch_size=4, warmup=2, eval_every=3, blanket_size=4, val_blankets=8,
        backbone=dict(KWARGS), denoising_steps=4, val_every_days=4,
    )  # fmt: skip
    train(TrainingData(states, times, 1, "memory"), tmp_path / "m", config)
    model = load_model(tmp_path / "m")
    assert model.card.archive == "memory"
    assert model.card.metadata["trained_steps"] == 6
    start = datetime(2000, 3, 1, 6)
    one = generate_trajectory(model, 10, start, seed=7, overlap=2)
    two = generate_trajectory(load_model(tmp_path / "m"), 10, start, seed=7, overlap=2)
    three = generate_trajectory(model, 10, start, seed=8, overlap=2)
    assert one.latent.shape == (10, *SHAPE)
    assert torch.isfinite(one.latent).all()
    assert torch.equal(one.latent, two.latent)
    assert not torch.equal(one.latent, three.latent)


def test_cards_of_earlier_releases_name_their_backbone_by_its_old_path(tmp_path):
    old = card_dict(backbone={"target": "priorflow.reference:ReferenceBackbone", "kwargs": KWARGS})
    model = load_model(make_dir(tmp_path / "m", card=old))
    assert type(model.backbone).__module__ == "priorflow.models.reference"


@pytest.mark.parametrize(
    ("name", "damage", "expected"),
    [
        ("lag_correlation", lambda t: t.fill_(1.5), "lag_correlation lies beyond +-0.995"),
        ("climatology", lambda t: t.view(-1)[0].fill_(float("nan")), "climatology is not finite"),
        ("channel_covariance", lambda t: t[..., 0, 1, 0].fill_(0.5), "is not Hermitian"),
        ("channel_covariance", lambda t: t.mul_(-1), "is not positive definite"),
    ],
)
def test_a_spectral_skip_with_damaged_statistics_is_refused(tmp_path, name, damage, expected):
    """The skip's fitted prior is read back from the checkpoint: checked before it is used."""
    kwargs = {**KWARGS, "spectral_skip": True}
    directory = make_dir(tmp_path / "m", card_dict(backbone={"target": TARGET, "kwargs": kwargs}))
    backbone = ReferenceBackbone(SHAPE, **kwargs)
    torch.save(backbone.state_dict(), directory / "model_best.pt")
    assert load_model(directory).backbone.spectral_skip  # unfitted: the identity prior
    state = backbone.state_dict()
    damage(state[name])
    torch.save(state, directory / "model_best.pt")
    message = load_error(directory)
    assert message.startswith(f"checkpoint {directory / 'model_best.pt'}: ")
    assert expected in message and "retrain" in message
