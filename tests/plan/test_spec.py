"""The sampling spec: one record, written under the config's key names, compared on resume."""

from __future__ import annotations

import json

from priorflow.plan import SamplingSpec, spec_differences
from priorflow.plan.spec import flatten
from tests._runs import make_card, small_run


def test_attrs_use_the_config_key_names_and_read_back(tmp_path):
    _, _, plan = small_run(tmp_path, "blanket_batch=3", checkpoint_sha256="ab" * 32)
    attrs = json.loads(json.dumps(plan.spec.attrs()))  # what a zarr attribute holds
    assert set(attrs) == {
        "model_path",
        "model_target",
        "checkpoint_sha256",
        "card",
        "diffusion",
        "blanket_overlap",
        "fold_mode",
        "precision",
        "seed",
        "blanket_batch",
        "members_per_task",
    }
    assert attrs["diffusion"] == {
        "num_steps": 64,
        "sampler": {"type": "lms", "config": {"grid": "uniform", "order": 3}},
    }
    assert SamplingSpec.from_attrs(attrs) == plan.spec
    assert (plan.spec.blanket_size, plan.spec.dt_hours, plan.spec.state_shape) == (8, 1, (2, 3, 4))


def test_flatten_names_every_leaf():
    assert dict(flatten({"a": {"b": 1, "c": {}}, "d": [1]})) == {"a.b": 1, "a.c": {}, "d": [1]}


def test_differences_name_the_dotted_key(tmp_path):
    _, _, plan = small_run(tmp_path, checkpoint_sha256="ab" * 32)
    stored = json.loads(json.dumps(plan.spec.attrs()))
    assert spec_differences(stored, plan.spec) == []
    _, _, other = small_run(
        tmp_path, "diffusion.sampler.config.order=2", checkpoint_sha256="ab" * 32
    )
    assert spec_differences(stored, other.spec) == [("diffusion.sampler.config.order", 3, 2)]
    _, _, batch = small_run(tmp_path, "blanket_batch=2", checkpoint_sha256="ab" * 32)
    assert spec_differences(stored, batch.spec) == []  # execution only: not the samples


def test_a_moved_model_is_the_same_model_only_with_the_same_checkpoint(tmp_path):
    _, _, plan = small_run(tmp_path, checkpoint_sha256="ab" * 32)
    stored = json.loads(json.dumps(plan.spec.attrs()))
    _, _, moved = small_run(tmp_path / "elsewhere", checkpoint_sha256="ab" * 32)
    assert moved.spec.model_path != plan.spec.model_path
    assert spec_differences(stored, moved.spec) == []
    _, _, unknown = small_run(tmp_path / "elsewhere")  # no hash known: the path decides
    assert [key for key, *_ in spec_differences(stored, unknown.spec)] == ["model_path"]
    changed_card = make_card(denoising_steps=32)
    _, _, other = small_run(tmp_path, card=changed_card, checkpoint_sha256="ab" * 32)
    assert ("card.denoising_steps", 16, 32) in spec_differences(stored, other.spec)
