"""Noise schedules: end points, monotonicity, formulas, and no overflow in low precision."""

from __future__ import annotations

import math

import pytest
import torch

from priorflow.core.schedules import SCHEDULES, make_schedule


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_monotone_between_sigma_min_and_sigma_max(name: str) -> None:
    schedule = make_schedule(name, 1e-3, 1e3)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    sigma = schedule(t)
    assert sigma.dtype == torch.float64 and torch.isfinite(sigma).all()
    assert (sigma[1:] > sigma[:-1]).all()
    assert 0.9e-3 < float(sigma[0]) < 1.1e-3
    assert 0.9e3 < float(sigma[-1]) < 1.1e3
    assert schedule(0.5) == pytest.approx(float(sigma[500]))


def test_formulas_at_known_points() -> None:
    assert make_schedule("rectified")(0.0) == pytest.approx(1e-3)
    assert make_schedule("rectified")(1.0) == pytest.approx(1e3)
    assert make_schedule("rectified")(0.5) == pytest.approx(
        (0.5 + 0.5e-3) / (0.5 * (1e-3 - 1) + 1)
    )
    assert make_schedule("loglinear")(0.5) == pytest.approx(1.0)
    eps = (1e-3 / 1e3) ** 0.25
    logit = math.log((0.25 * (1 - 2 * eps) + eps) / (1 - (0.25 * (1 - 2 * eps) + eps)))
    assert make_schedule("loglogit")(0.25) == pytest.approx(math.exp(2 * logit))


def test_rectified_end_point_overflows_in_bfloat16_but_not_here() -> None:
    """Why schedules never run in bfloat16: sigma(1) of the rectified schedule becomes inf there."""
    t = torch.tensor(1.0, dtype=torch.bfloat16)
    naive = (t + (1 - t) * 1e-3) / (t * (1 / 1e3 - 1) + 1)
    assert not torch.isfinite(naive)
    assert math.isfinite(make_schedule("rectified")(t))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cosine",), "'cosine' is not a schedule; choose one of rectified"),
        (("rectified", 1.0, 0.5), "need 0 < sigma_min < sigma_max"),
        (("rectified", 1e-3, 1e3, 2.0), "t_max must lie in"),
    ],
)
def test_bad_schedules_are_plain_errors(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_schedule(*args)
