"""The synthetic world: exact statistics against Monte Carlo, the exact denoiser against dense
linear algebra, the exact backbone through the EDM preconditioning, and the exact model dir."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
import torch
import yaml

from priorflow.core.dates import times_to_fields, timestamps
from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.errors import ConfigError, ModelError
from priorflow.data.synthetic import (
    ExactBackbone,
    SyntheticWorld,
    exact_backbone,
    fields_to_times,
    write_exact_model,
)

H1 = np.timedelta64(1, "h")


def hourly(start: str, n: int, dt: int = 1) -> np.ndarray:
    return np.datetime64(start, "ns") + np.arange(n) * dt * H1


# ------------------------------------------------------------------------------ dates, mean


def test_fields_to_times_inverts_times_to_fields():
    times = np.array(
        ["1999-12-31T23", "2000-02-29T05", "2000-03-01T00", "2024-07-15T12"],
        dtype="datetime64[ns]",
    )
    np.testing.assert_array_equal(fields_to_times(times_to_fields(times)), times)
    fields = timestamps(datetime(2000, 2, 28, 22), 5, 1).reshape(1, 5, 4)
    assert fields_to_times(fields).shape == (1, 5)
    assert str(fields_to_times(fields)[0, 3]) == "2000-02-29T01:00:00.000000000"


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
    se = world.sampling_errors(T)
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


# ------------------------------------------------------------------------------ exact denoiser


def dense_spatial_covariance(world: SyntheticWorld) -> np.ndarray:
    """S[p, q] = 1/N sum_k P_k cos(2 pi k (p - q) / N), by the explicit DFT sum (no FFT)."""
    _, H, W = world.shape
    y, x = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    y, x = y.ravel(), x.ravel()
    ky, kx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    phase = (
        2
        * np.pi
        * (
            np.subtract.outer(y, y)[..., None] * ky.ravel() / H
            + np.subtract.outer(x, x)[..., None] * kx.ravel() / W
        )
    )
    return (np.cos(phase) * world.spectrum.ravel()).mean(axis=-1)


def test_exact_denoiser_equals_dense_posterior_mean():
    world = SyntheticWorld((2, 3, 4), seed=7, rho=0.85)
    times = np.array(
        [
            hourly("2000-06-01T10", 3),
            np.datetime64("2000-12-31T22", "ns") + np.array([0, 1, 3]) * H1,
        ]
    )  # (n=2, K=3), the second blanket unevenly spaced
    cov_s = np.kron(world.channel_covariance, dense_spatial_covariance(world))
    np.testing.assert_allclose(world.state_covariance(), cov_s, atol=1e-12)
    rng = np.random.default_rng(0)
    for sigma in (1e-3, 0.05, 1.0, 20.0, 1e3):
        x = rng.standard_normal((2, 3, *world.shape)) * (1 + sigma)
        sigmas = torch.tensor([sigma, sigma], dtype=torch.float64)
        out = world.posterior_mean(torch.from_numpy(x), sigmas, times)
        for i in range(2):
            T = world.rho ** np.abs(np.subtract.outer(*(2 * [(times[i] - times[i, 0]) / H1])))
            C = np.kron(T, cov_s)
            np.testing.assert_allclose(world.blanket_covariance(times[i]), C, atol=1e-12)
            m = world.mean(times[i]).ravel()
            dense = m + C @ np.linalg.solve(C + sigma**2 * np.eye(len(C)), x[i].ravel() - m)
            np.testing.assert_allclose(out[i].numpy().ravel(), dense, rtol=1e-9, atol=1e-9)


def blankets(world: SyntheticWorld, n: int = 5, K: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dates = torch.stack(
        [timestamps(datetime(2000, 4, 3, 5) + timedelta(hours=4 * i), K, 1) for i in range(n)]
    )  # (n, K, 4)
    x = torch.from_numpy(np.stack([world.sample(fields_to_times(d), g) for d in dates]))
    return x, dates, g


@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 0.3, 1.0, 7.0, 1e2, 1e3])
def test_preconditioned_exact_backbone_is_the_posterior_mean(sigma):
    backbone = exact_backbone()
    world = backbone.world
    x0, dates, g = blankets(world)
    x = x0.double() + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    exact = world.posterior_mean(x, sigma, dates)
    denoiser = PreconditionedDenoiser(backbone)
    out = denoiser(x.float(), torch.full((x.shape[0],), sigma), dates)
    assert out.dtype == torch.float32
    # float32 round-off of the input and output only (|x| ~ sigma, the result ~ 1)
    tolerance = 1e-6 * (4 + sigma * 2e-3)
    assert (out.double() - exact).abs().max() < tolerance
    # and it denoises: closer to the clean states than the noisy input for large sigma
    if sigma >= 1:
        assert (exact - x0).square().mean() < (x - x0).square().mean()


def test_exact_backbone_ignores_autocast_precision():
    backbone = exact_backbone()
    x0, dates, _ = blankets(backbone.world, n=2)
    sigma = torch.tensor(0.5)
    full = PreconditionedDenoiser(backbone, "float32")(x0, sigma, dates)
    half = PreconditionedDenoiser(backbone, "bfloat16")(x0, sigma, dates)
    torch.testing.assert_close(half, full)


def test_exact_backbone_rejects_a_wrong_shape():
    backbone = exact_backbone(state_shape=(2, 4, 8))
    with pytest.raises(ValueError, match="do not match"):
        backbone(torch.zeros(1, 3, 4, 16, 32), torch.zeros(1), torch.zeros(1, 3, 4).long())
    with pytest.raises(ConfigError):
        exact_backbone(state_shape=(4, 16))
    with pytest.raises(ConfigError, match="differs"):
        exact_backbone(state_shape=(4, 16, 32), shape=(2, 4, 8))


def test_denoiser_is_fast_enough_for_flow_tests():
    """A batch of 17 blankets (T=72, K=8, overlap 4) in well under 50 ms on one thread."""
    import time

    backbone = exact_backbone()
    x0, dates, _ = blankets(backbone.world, n=17)
    denoiser = PreconditionedDenoiser(backbone)
    denoiser(x0, torch.tensor(1.0), dates)  # warm the per-date cache
    began = time.perf_counter()
    for sigma in (0.1, 1.0, 10.0):
        denoiser(x0, torch.tensor(sigma), dates)
    assert (time.perf_counter() - began) / 3 < 0.05


# ------------------------------------------------------------------------------ model directory


def test_write_exact_model_loads_through_the_card(tmp_path):
    from priorflow.models.loading import CHECKPOINTS, load_model

    path = write_exact_model(tmp_path / "exact", blanket_size=6, dt_hours=1, seed=3)
    card = yaml.safe_load((path / "card.yaml").read_text())
    assert card["backbone"]["target"] == "priorflow.data.synthetic:exact_backbone"
    assert card["blanket_size"] == 6 and card["state_shape"] == [4, 16, 32]
    assert sorted(p.name for p in path.iterdir()) == sorted(["card.yaml", *CHECKPOINTS.values()])
    for target in ("best", "last"):
        model = load_model(path, target=target)
        assert isinstance(model.backbone, ExactBackbone)
        assert model.backbone.world.seed == 3
    x0, dates, _ = blankets(model.backbone.world, n=2, K=6)
    expected = model.backbone.world.posterior_mean(x0, 2.0, dates)
    out = model.denoiser()(x0, torch.tensor(2.0), dates)
    assert (out.double() - expected).abs().max() < 1e-5
    # nothing left behind next to it
    assert [p.name for p in tmp_path.iterdir()] == ["exact"]


def test_exact_model_checkpoint_of_another_world_is_refused(tmp_path):
    from priorflow.models.loading import load_model

    path = write_exact_model(tmp_path / "exact", seed=3)
    card = yaml.safe_load((path / "card.yaml").read_text())
    card["backbone"]["kwargs"]["seed"] = 4
    (path / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match="different synthetic world") as error:
        load_model(path)
    assert "\n" not in str(error.value)
    card["backbone"]["kwargs"]["seed"] = 3
    card["state_shape"] = [4, 16]
    (path / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match="state_shape"):
        load_model(path)


def test_write_exact_model_refuses_to_clobber(tmp_path):
    path = write_exact_model(tmp_path / "exact")
    with pytest.raises(ModelError, match="already exists"):
        write_exact_model(path)
    write_exact_model(path, overwrite=True, seed=9)
    assert "seed: 9" in (path / "card.yaml").read_text()


def test_exact_backbone_on_device_and_copies(device):
    import copy
    import pickle

    backbone = exact_backbone()
    x0, dates, _ = blankets(backbone.world, n=3)
    expected = backbone.world.posterior_mean(x0, 0.7, dates)
    denoiser = PreconditionedDenoiser(backbone).to(device)
    out = denoiser(x0.to(device), torch.full((3,), 0.7, device=device), dates.to(device))
    assert out.device.type == device.type
    assert (out.cpu().double() - expected).abs().max() < 1e-5
    for clone in (copy.deepcopy(backbone), pickle.loads(pickle.dumps(backbone))):
        torch.testing.assert_close(
            clone(x0, torch.zeros(3), dates), backbone(x0, torch.zeros(3), dates)
        )
