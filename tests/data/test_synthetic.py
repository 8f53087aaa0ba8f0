"""The synthetic world: exact statistics against Monte Carlo and dense linear algebra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from priorflow.data.sampling_errors import sampling_errors
from priorflow.data.synthetic import SyntheticWorld
from priorflow.errors import ConfigError

H1 = np.timedelta64(1, "h")


def hourly(start: str, n: int, dt: int = 1) -> np.ndarray:
    return np.datetime64(start, "ns") + np.arange(n) * dt * H1


# ------------------------------------------------------------------------------ mean


def test_mean_follows_the_season_and_the_sun():
    world = SyntheticWorld()
    C, H, W = world.shape
    north, south = slice(0, H // 4), slice(3 * H // 4, H)
    jan, jul = world.mean(np.array(["2000-01-15T00", "2000-07-15T00"], dtype="datetime64[ns]"))
    # northern summer warmer than northern winter, the opposite in the south, every channel
    assert np.all(jul[:, north].mean(axis=(1, 2)) > jan[:, north].mean(axis=(1, 2)))
    assert np.all(jul[:, south].mean(axis=(1, 2)) < jan[:, south].mean(axis=(1, 2)))
    # the warm spot sits under the sun: longitude 180 at 00 UTC, 0/360 at 12 UTC
    day = world.mean(hourly("2000-03-21T00", 24))
    midnight, noon = day[0] - day.mean(axis=0), day[12] - day.mean(axis=0)
    columns = midnight.mean(axis=(0, 1)).argmax(), noon.mean(axis=(0, 1)).argmax()
    assert columns[0] in (W // 2 - 1, W // 2)
    assert columns[1] in (0, W - 1)
    # amplitudes differ per channel
    amplitude = (day.max(axis=0) - day.min(axis=0)).max(axis=(1, 2))
    assert len(np.unique(np.round(amplitude, 3))) == C


def test_world_is_standardised_and_deterministic():
    world = SyntheticWorld()
    times = np.datetime64("2003-01-01T00", "ns") + np.arange(0, 8760, 5) * H1
    m = world.mean(times)
    # climatological channel mean ~0, total variance (mean cycle + anomalies) = 1
    np.testing.assert_allclose(m.mean(axis=(0, 2, 3)), 0, atol=0.01)
    total = m.var(axis=(0, 2, 3)) + world.channel_std**2
    np.testing.assert_allclose(total, 1, atol=0.02)
    assert world.std.shape == world.shape
    again = SyntheticWorld(seed=0)
    np.testing.assert_array_equal(again.fingerprint(), world.fingerprint())
    assert not np.allclose(SyntheticWorld(seed=1).fingerprint(), world.fingerprint())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    np.testing.assert_array_equal(world.sample(times[:5], g1), world.sample(times[:5], g2))


def test_bad_world_settings_are_config_errors():
    with pytest.raises(ConfigError, match="rho"):
        SyntheticWorld(rho=1.0)
    with pytest.raises(ConfigError, match="shape"):
        SyntheticWorld((4, 16))
    with pytest.raises(ConfigError, match="anomaly variance"):
        SyntheticWorld(season_amplitude=(3, 4))


# ------------------------------------------------------------------------------ Monte Carlo


def test_sample_statistics_match_exact_values():
    """Empirical mean, std and lag-1 correlation of one long trajectory vs the exact values,
    within 4 exact standard errors (see ``SyntheticWorld.sampling_errors``)."""
    world = SyntheticWorld((3, 8, 16), seed=2)
    T = 3000
    times = hourly("2000-05-01T07", T)
    x = world.sample(times, torch.Generator().manual_seed(0))
    assert x.shape == (T, 3, 8, 16) and x.dtype == np.float32
    a = x.astype(np.float64) - world.mean(times)
    se = sampling_errors(world, T)
    mean = a.mean(axis=(0, 2, 3))
    std = np.sqrt((a**2).mean(axis=(0, 2, 3)))
    lag1 = (a[1:] * a[:-1]).sum(axis=(0, 2, 3)) / (a[:-1] ** 2).sum(axis=(0, 2, 3))
    assert np.all(np.abs(mean) < 4 * se["mean"]), (mean, se["mean"])
    assert np.all(np.abs(std - world.channel_std) < 4 * se["std"]), (std, world.channel_std)
    assert np.all(np.abs(lag1 - world.lag_correlation(1)) < 4 * se["lag1"]), lag1
    # the errors are small enough for this to mean something
    assert se["std"].max() < 0.02 and se["lag1"].max() < 0.01


def test_sample_covariance_matches_dense_covariance():
    """Independent pairs of consecutive states of a tiny world: empirical lag-0 and lag-k
    covariance matrices equal Sigma_c x S and rho^k Sigma_c x S."""
    world = SyntheticWorld((2, 3, 4), seed=4, rho=0.8)
    pairs = 4000
    g = torch.Generator().manual_seed(1)
    # two states 2 h apart, pairs 1000 h apart (correlation 0.8**1000: independent)
    base = np.datetime64("2001-01-01T00", "ns") + np.arange(pairs) * 1000 * H1
    times = np.sort(np.concatenate([base, base + 2 * H1]))
    a = world.sample(times, g).astype(np.float64) - world.mean(times)
    a = a.reshape(pairs, 2, -1)
    cov0 = np.einsum("ni,nj->ij", a[:, 0], a[:, 0]) / pairs
    cov2 = np.einsum("ni,nj->ij", a[:, 0], a[:, 1]) / pairs
    exact = world.state_covariance()
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    tolerance = 5 * scale * np.sqrt(2 / pairs)
    assert np.all(np.abs(cov0 - exact) < tolerance)
    assert np.all(np.abs(cov2 - 0.8**2 * exact) < tolerance)


def test_sample_does_not_depend_on_chunking():
    world = SyntheticWorld((2, 4, 8))
    times = hourly("2000-01-01T00", 50)
    whole = world.sample(times, torch.Generator().manual_seed(3))
    parts = np.concatenate(
        [s for _, s in world.iter_sample(times, torch.Generator().manual_seed(3), chunk=7)]
    )
    np.testing.assert_allclose(parts, whole, atol=1e-6)
