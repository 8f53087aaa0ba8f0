"""Noise-level grids: their ends, their order, their shapes."""

from __future__ import annotations

import numpy as np
import pytest

from priorflow.core.grids import BAND, GRIDS, noise_levels
from priorflow.core.schedules import make_schedule


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("steps", [1, 2, 3, 16, 64])
def test_every_grid_runs_from_sigma_max_to_sigma_min(grid, steps):
    schedule = make_schedule("rectified", 1e-3, 1e3)
    sigmas = noise_levels(schedule, steps, grid).numpy()
    assert len(sigmas) == steps + 1
    assert sigmas[0] == pytest.approx(1e3) and sigmas[-1] == pytest.approx(1e-3)
    assert np.all(np.diff(sigmas) < 0)


def test_the_uniform_grid_is_uniform_in_diffusion_time():
    schedule = make_schedule("loglinear", 1e-3, 1e3, t_max=0.5)
    sigmas = noise_levels(schedule, 4, "uniform").numpy()
    np.testing.assert_allclose(sigmas, [schedule(t) for t in (0.5, 0.375, 0.25, 0.125, 0.0)])


def test_karras_and_loglinear_shapes():
    schedule = make_schedule("rectified", 1e-3, 1e3)
    log = np.log(noise_levels(schedule, 10, "loglinear").numpy())
    np.testing.assert_allclose(np.diff(log), np.diff(log)[0])
    root = noise_levels(schedule, 10, "karras").numpy() ** (1 / 7)
    np.testing.assert_allclose(np.diff(root), np.diff(root)[0])


def test_the_band_grid_spends_its_steps_in_the_band():
    schedule = make_schedule("rectified", 1e-3, 1e3)
    sigmas = noise_levels(schedule, 16, "band").numpy()
    inside = (sigmas >= BAND[0] - 1e-12) & (sigmas <= BAND[1] + 1e-12)
    assert inside.sum() == 15 and sigmas[1] == pytest.approx(BAND[1])
    assert sigmas[-2] == pytest.approx(BAND[0])
    many = noise_levels(schedule, 100, "band").numpy()
    assert (many > BAND[1] + 1e-9).sum() == 6 and (many < BAND[0] - 1e-9).sum() == 6
    # a schedule inside the band: Karras' grid
    narrow = make_schedule("rectified", 0.1, 10.0)
    np.testing.assert_allclose(noise_levels(narrow, 8, "band"), noise_levels(narrow, 8, "karras"))


def test_an_unknown_grid_is_a_plain_error():
    with pytest.raises(ValueError, match="'cosine' is not a grid; choose one of uniform"):
        noise_levels(make_schedule("rectified"), 4, "cosine")
