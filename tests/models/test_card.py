"""The model card: reading, writing and every error of a card."""

from __future__ import annotations

from priorflow.models.card import ModelCard, read_card, write_card
from tests.model_dirs import SHAPE, card_dict, load_error, make_dir


def test_read_card_loads_no_weights(tmp_path):
    directory = make_dir(tmp_path / "m", targets=())
    card = read_card(directory)
    assert isinstance(card, ModelCard)
    assert card.state_shape == SHAPE


def test_write_card_round_trip(tmp_path):
    card = ModelCard.model_validate(card_dict())
    write_card(tmp_path, card)
    assert read_card(tmp_path) == card


def test_missing_directory(tmp_path):
    message = load_error(tmp_path / "nowhere")
    assert "does not exist" in message and "nowhere" in message


def test_no_card(tmp_path):
    (tmp_path / "m").mkdir()
    message = load_error(tmp_path / "m")
    assert "has no card.yaml" in message


def test_yaml_that_does_not_parse(tmp_path):
    directory = make_dir(tmp_path / "m", card="backbone: [unclosed\nblanket_size: 4\n")
    message = load_error(directory)
    assert "not valid YAML" in message and "line" in message


def test_card_that_is_not_a_mapping(tmp_path):
    directory = make_dir(tmp_path / "m", card="- a\n- b\n")
    assert "expected a mapping" in load_error(directory)


def test_missing_card_key(tmp_path):
    card = card_dict()
    del card["blanket_size"]
    message = load_error(make_dir(tmp_path / "m", card=card))
    assert "missing key 'blanket_size'" in message


def test_missing_nested_card_key(tmp_path):
    card = card_dict(backbone={"kwargs": {}})
    assert "missing key 'backbone.target'" in load_error(make_dir(tmp_path / "m", card=card))


def test_unknown_card_key(tmp_path):
    card = card_dict(blanket_sise=4)
    message = load_error(make_dir(tmp_path / "m", card=card))
    assert "unknown key 'blanket_sise'" in message and "blanket_size" in message


def test_unknown_nested_card_key(tmp_path):
    card = card_dict(schedule={"name": "rectified", "sigma_mni": 1e-3})
    message = load_error(make_dir(tmp_path / "m", card=card))
    assert "unknown key 'schedule.sigma_mni'" in message and "sigma_min" in message


def test_bad_card_value(tmp_path):
    card = card_dict(blanket_size=0)
    message = load_error(make_dir(tmp_path / "m", card=card))
    assert "'blanket_size'" in message and "bad value 0" in message
