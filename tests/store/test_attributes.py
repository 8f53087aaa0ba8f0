"""Store attributes written flat (any zarr or netCDF tool reads them) and read back nested."""

from __future__ import annotations

import pytest

from priorflow.store.attributes import flat_attrs, nested_attrs, netcdf_attrs

NESTED = {
    "title": "priorflow prior trajectories",
    "diffusion": {"num_steps": 64, "sampler": {"type": "lms", "config": {}}},
    "card": {
        "backbone": {"target": "m:f", "kwargs": {}},
        "state_shape": [2, 3, 4],
        "archive": None,
        "metadata": {"format": "appa", "a.b": 1},  # free-form: a dotted key keeps it whole
    },
    "blanket_batch": None,
    "aggregated": False,
    "summary": {"mean": 0.5, "non_finite": [], "mixed": [1, "x"]},
    "priorflow_schema": {"groups": {"72h": {"states": 72}}, "start_dates": ["2000-01-01"]},
}


def test_flat_attributes_are_plain_and_read_back_exactly():
    flat = flat_attrs(NESTED)
    assert flat["diffusion.num_steps"] == 64 and flat["diffusion.sampler.type"] == "lms"
    assert flat["priorflow_schema.groups.72h.states"] == 72
    assert flat["card.state_shape"] == [2, 3, 4] and flat["card.archive"] is None
    assert flat["card.metadata"] == {"format": "appa", "a.b": 1}
    assert flat["diffusion.sampler.config"] == {} and flat["card.backbone.kwargs"] == {}
    assert nested_attrs(flat) == NESTED


def test_attributes_of_an_earlier_store_read_back_unchanged():
    assert nested_attrs(NESTED) == NESTED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (3, 3),
        (0.5, 0.5),
        ("x", "x"),
        ([1, 2.5], [1.0, 2.5]),
        (["a", "b"], ["a", "b"]),
        (None, None),
        ([], None),
        ({}, None),
        ([1, "x"], None),
    ],
)
def test_netcdf_attributes_hold_only_what_netcdf_can(value, expected):
    out = netcdf_attrs({"card": {"value": value}})
    assert out.get("card.value") == expected
    assert ("card.value" in out) is (expected is not None)
