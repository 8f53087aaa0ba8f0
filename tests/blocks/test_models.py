"""The Prefect blocks' fields: the names of the run config, and old saved blocks still read."""

from __future__ import annotations

from blocks import PriorModel


def test_prior_model_calls_the_checkpoint_model_target_as_the_config_does():
    block = PriorModel(model_path="/m", model_target="last")
    assert block.config_values() == {"model_path": "/m", "model_target": "last"}
    assert "model_target" in block.model_dump() and "target" not in block.model_dump()
    schema = PriorModel.model_json_schema()["properties"]
    assert "model_target" in schema and "target" not in schema  # the UI's form


def test_a_block_saved_with_the_old_name_target_still_loads():
    """Prefect loads a saved block with ``cls.model_validate(block_document.data)``."""
    old = PriorModel.model_validate({"model_path": "/m", "target": "last"})
    assert old.config_values() == {"model_path": "/m", "model_target": "last"}
    assert PriorModel.model_validate({"model_path": "/m"}).model_target == "best"
