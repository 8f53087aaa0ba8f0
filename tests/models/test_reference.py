"""The reference backbone: shapes, date features, conditioning, independence, autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from priorflow.core.dates import hour_of_day, times_to_fields, timestamps, year_progress
from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.errors import ConfigError
from priorflow.models.reference import (
    ReferenceBackbone,
    climatology_features,
    date_features,
)

SHAPE = (2, 8, 16)
KWARGS = {"channels": [8, 16, 16], "embedding": 16}


def perturbed(shape=SHAPE, seed=0, **kwargs) -> ReferenceBackbone:
    """A backbone whose zero-initialised layers are perturbed, so every path matters."""
    torch.manual_seed(seed)
    backbone = ReferenceBackbone(shape, **(kwargs or KWARGS))
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return backbone.eval()


def inputs(n=3, k=5, shape=SHAPE, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, *shape, generator=generator)
    c_noise = torch.linspace(-60, 60, n)
    starts = ["2000-01-01T00", "2000-06-15T07", "2001-12-31T20"][:n]
    dates = torch.stack(
        [timestamps(np.datetime64(s).astype("datetime64[s]").item(), k, 1) for s in starts]
    )
    return x, c_noise, dates


def test_default_size_and_shapes(device):
    backbone = ReferenceBackbone((4, 16, 32)).to(device)
    parameters = sum(p.numel() for p in backbone.parameters())
    assert 100_000 <= parameters <= 500_000
    x = torch.randn(2, 8, 4, 16, 32, device=device)
    dates = timestamps(np.datetime64("2000-04-03T00").item(), 8, 1).expand(2, 8, 4)
    out = backbone(x, torch.tensor([0.0, 10.0], device=device), dates.to(device))
    assert out.shape == x.shape and out.dtype == torch.float32


@pytest.mark.parametrize("k", [1, 2, 8])
def test_any_blanket_size(k):
    x, c_noise, dates = inputs(k=k)
    assert perturbed()(x, c_noise, dates).shape == x.shape


def test_scalar_noise_level():
    x, _, dates = inputs()
    backbone = perturbed()
    scalar = backbone(x, torch.tensor(5.0), dates)
    assert torch.allclose(scalar, backbone(x, torch.full((3,), 5.0), dates))


@pytest.mark.parametrize(
    ("shape", "kwargs", "expected"),
    [
        ((2, 7, 16), {"channels": [8, 16]}, "divisible by 2"),
        ((2, 8, 12), {"channels": [8, 16, 16, 16]}, "divisible by 8"),
        ((2, 8), {}, "is not (C, H, W)"),
        ((0, 8, 16), {}, "is not (C, H, W)"),
        ((2, 8, 16), {"temporal_kernel": 2}, "temporal_kernel"),
        ((2, 8, 16), {"padding": "reflect"}, "padding"),
        ((2, 8, 16), {"channels": []}, "must be positive"),
        ((2, 8, 16), {"position_rank": -1}, "position_rank"),
        ((2, 8, 16), {"upsampling": "bicubic"}, "upsampling"),
    ],
)
def test_rejected_settings(shape, kwargs, expected):
    with pytest.raises(ConfigError) as info:
        ReferenceBackbone(shape, **kwargs)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_wrong_state_shape_at_call():
    x, c_noise, dates = inputs()
    with pytest.raises(ValueError, match="built for"):
        perturbed()(x[..., :8], c_noise, dates)


def test_date_features_match_calendar():
    times = np.array(
        ["2000-02-29T12", "2000-03-01T00", "2001-03-01T00", "2000-12-31T23", "2001-07-04T05"],
        dtype="datetime64[ns]",
    )
    features = date_features(times_to_fields(times)).numpy()
    progress = year_progress(times)  # leap-aware, from the synthetic world's own calendar
    hours = hour_of_day(times)
    expected = np.stack(
        [
            np.sin(2 * np.pi * progress),
            np.cos(2 * np.pi * progress),
            np.sin(2 * np.pi * hours / 24),
            np.cos(2 * np.pi * hours / 24),
        ],
        axis=-1,
    )
    np.testing.assert_allclose(features, expected, atol=1e-5)


def test_date_features_are_continuous_across_new_year():
    times = np.array(["2000-12-31T23", "2001-01-01T00"], dtype="datetime64[ns]")
    features = date_features(times_to_fields(times), harmonics=2)
    assert features.shape == (2, 8)
    season = features[:, :4]  # seasonal sin/cos of both harmonics
    assert (season[0] - season[1]).abs().max() < 0.02


def test_conditioning_changes_the_output():
    x, c_noise, dates = inputs()
    backbone = perturbed()
    base = backbone(x, c_noise, dates)
    other_noise = backbone(x, c_noise + 10, dates)
    later_hour = dates.clone()
    later_hour[..., 3] = (later_hour[..., 3] + 6) % 24
    other_season = dates.clone()
    other_season[..., 1] = (other_season[..., 1] + 5) % 12 + 1
    for changed in (
        other_noise,
        backbone(x, c_noise, later_hour),
        backbone(x, c_noise, other_season),
    ):
        assert (changed - base).abs().mean() > 1e-3 * base.abs().mean()


def test_states_mix_in_time():
    x, c_noise, dates = inputs(k=5)
    backbone = perturbed()
    base = backbone(x, c_noise, dates)
    bumped = x.clone()
    bumped[:, 2] += 1.0
    changed = backbone(bumped, c_noise, dates)
    # a neighbouring state's output responds to the change of state 2
    assert (changed[:, 1] - base[:, 1]).abs().max() > 1e-4
    assert (changed[:, 3] - base[:, 3]).abs().max() > 1e-4


def test_blankets_are_independent():
    x, c_noise, dates = inputs()
    backbone = perturbed()
    together = backbone(x, c_noise, dates)
    for i in range(len(x)):
        alone = backbone(x[i : i + 1], c_noise[i : i + 1], dates[i : i + 1])
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-4)


def test_circular_padding_wraps():
    backbone = perturbed(padding="circular", **KWARGS)
    x, c_noise, dates = inputs()
    out = backbone(x, c_noise, dates)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("shift", [1, 3])
def test_bilinear_upsampling_on_a_periodic_domain_commutes_with_shifts(shift):
    backbone = ReferenceBackbone((2, 8, 16), padding="circular", upsampling="bilinear")
    h = torch.randn(2, 3, 4, 8)
    shifted = backbone._double(torch.roll(h, (shift, shift), dims=(-2, -1)))
    torch.testing.assert_close(
        shifted, torch.roll(backbone._double(h), (2 * shift, 2 * shift), dims=(-2, -1))
    )
    smooth = backbone._double(torch.ones(1, 1, 4, 8))
    torch.testing.assert_close(smooth, torch.ones(1, 1, 8, 16))


def test_the_backbone_upsamples_as_configured():
    bilinear = perturbed(padding="circular", upsampling="bilinear", **KWARGS)
    nearest = perturbed(padding="circular", **KWARGS)  # the same weights (same seed)
    x, c_noise, dates = inputs()
    out = bilinear(x, c_noise, dates)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, nearest(x, c_noise, dates))


def test_reference_trains_a_step():
    backbone = perturbed()
    x, c_noise, dates = inputs()
    loss = (backbone(x, c_noise, dates) - x).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in backbone.parameters())


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
@pytest.mark.parametrize("spectral_skip", [False, True])
def test_autocast(precision, device, spectral_skip):
    backbone = perturbed(**KWARGS, spectral_skip=spectral_skip)
    if spectral_skip:
        generator = torch.Generator().manual_seed(2)
        states = 0.3 + ar1_states(64, 0.9, 1.0, generator).cumsum(-1) / 4
        pairs = torch.stack([torch.arange(63), torch.arange(1, 64)], 1)
        backbone.fit_states(states, hourly(64), pairs)
    backbone = backbone.to(device)
    x, _, dates = inputs()
    x, dates = x.to(device), dates.to(device)
    sigma = torch.tensor([0.01, 1.0, 100.0], device=device)
    full = PreconditionedDenoiser(backbone, "float32")(x, sigma, dates)
    reduced = PreconditionedDenoiser(backbone, precision)(x, sigma, dates)
    assert reduced.dtype == torch.float32
    assert torch.isfinite(reduced).all()
    error = (reduced - full).abs().max() / full.abs().max()
    assert error < 0.05


def test_without_positional_field():
    backbone = perturbed(position_rank=0, **KWARGS)
    assert not any("position_maps" in name for name, _ in backbone.named_parameters())
    x, c_noise, dates = inputs()
    assert backbone(x, c_noise, dates).shape == x.shape


def test_positional_field_moves_with_the_date():
    """With the convolutions' input zeroed, the output still depends on position and date."""
    backbone = perturbed()
    x, c_noise, dates = inputs(n=1, k=2)
    later = dates.clone()
    later[..., 3] += 3
    zero = torch.zeros_like(x)
    one, two = backbone(zero, c_noise, dates), backbone(zero, c_noise, later)
    assert one[0, 0].std() > 0  # varies over the grid
    assert (one - two).abs().max() > 1e-4


def test_an_unfitted_spectral_skip_changes_nothing():
    x, c_noise, dates = inputs()
    plain = perturbed()
    skip = ReferenceBackbone(SHAPE, **KWARGS, spectral_skip=True).eval()
    skip.load_state_dict(plain.state_dict(), strict=False)  # all but the skip's buffers
    torch.testing.assert_close(skip(x, c_noise, dates), plain(x, c_noise, dates))


def ar1_states(n: int, rho: float, scale: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` consecutive states of white noise in space (variance ``scale**2``) that is AR(1)
    with lag correlation ``rho`` from one state to the next."""
    states = torch.empty(n, *SHAPE)
    states[0] = torch.randn(SHAPE, generator=generator)
    for t in range(1, n):
        fresh = torch.randn(SHAPE, generator=generator)
        states[t] = rho * states[t - 1] + (1 - rho**2) ** 0.5 * fresh
    return scale * states


def hourly(n: int, dt_hours: int = 1, start: str = "2000-01-01T00") -> torch.Tensor:
    """``(year, month, day, hour)`` of ``n`` states ``dt_hours`` apart."""
    return timestamps(np.datetime64(start).astype("datetime64[s]").item(), n, dt_hours)


def test_climatology_features():
    dates = hourly(48, 6)
    features = climatology_features(dates)
    assert features.shape == (48, 29)
    assert torch.equal(features[:, 0], torch.ones(48))
    year = date_features(dates, 4)
    torch.testing.assert_close(features[:, 1:3], year[:, 0:2])  # seasonal sines 1, 2
    torch.testing.assert_close(features[:, 5:9], year[:, 8:12])  # diurnal sines 1..4
    torch.testing.assert_close(features[:, 13], year[:, 0] * year[:, 8])  # sin(p) sin(h)


def test_fit_states_measures_the_climatology_the_power_and_the_lag_correlation_per_mode():
    """States every 3 h over 500 days: a mean with a season and a day (the 4th diurnal sine
    is 0 at every 3rd hour, a direction the fit drops), AR(1) anomalies with 0.8."""
    generator = torch.Generator().manual_seed(0)
    n = 4000
    dates = hourly(n, 3)
    maps = torch.randn(29, *SHAPE, generator=generator) * (torch.rand(29, 1, 1, 1) < 0.3)
    maps[[8, 12]] = 0  # sin(4 h) and cos(4 h) alike: no unique fit at 3-hourly states
    mean = torch.einsum("nj,jchw->nchw", climatology_features(dates), maps)
    states = mean + ar1_states(n, 0.8, 0.2, generator)
    backbone = ReferenceBackbone(SHAPE, **KWARGS, spectral_skip=True)
    # pairs one step apart, with a gap (state 2000 does not follow 1999)
    first = torch.cat([torch.arange(0, 1999), torch.arange(2000, n - 1)])
    backbone.fit_states(states, dates, torch.stack([first, first + 1], dim=1))
    assert torch.isfinite(backbone.climatology).all()
    # 27 coefficients from about 440 independent anomalies of std 0.2 per grid point
    torch.testing.assert_close(backbone.mean_state(dates), mean, atol=0.15, rtol=0)
    later = hourly(8, 5, "2001-07-01T01")  # dates it did not see, hours it did not see
    expected = torch.einsum("nj,jchw->nchw", climatology_features(later), maps)
    torch.testing.assert_close(backbone.mean_state(later), expected, atol=0.3, rtol=0)
    # white in space, variance 0.04, channels independent: 0.04 I in every mode
    covariance = torch.view_as_complex(backbone.channel_covariance)
    assert covariance.shape == (SHAPE[1], SHAPE[2] // 2 + 1, SHAPE[0], SHAPE[0])
    expected = torch.full_like(covariance, 0.04) * torch.eye(SHAPE[0])
    torch.testing.assert_close(covariance, expected, atol=0.01, rtol=0)
    rho = backbone.lag_correlation
    torch.testing.assert_close(rho, torch.full_like(rho, 0.8), atol=0.06, rtol=0)
    # without pairs every state stands alone
    backbone.fit_states(states, dates)
    assert torch.equal(backbone.lag_correlation, torch.zeros_like(rho))


def test_fit_states_bounds_the_lag_correlation():
    states = torch.randn(1, *SHAPE).expand(50, *SHAPE) + 1e-3 * torch.randn(50, *SHAPE)
    backbone = ReferenceBackbone(SHAPE, **KWARGS, spectral_skip=True)
    pairs = torch.stack([torch.arange(49), torch.arange(1, 50)], dim=1)
    backbone.fit_states(states, hourly(50), pairs)
    assert backbone.lag_correlation.abs().max() <= 0.995


def blanket_posterior_mean(backbone: ReferenceBackbone, y, sigma: float, dates):
    """``m + Sigma (Sigma + sigma^2 I)^-1 (y - m)`` per spatial mode, with the dense
    ``KC x KC`` covariance ``Sigma_(i,a),(j,b) = rho^|i-j| S_ab`` (complex128)."""
    n, k, c = y.shape[:3]
    m = backbone.mean_state(dates).double()
    rho = backbone.lag_correlation.double()
    channels = torch.view_as_complex(backbone.channel_covariance.double().contiguous())
    lags = (torch.arange(k)[:, None] - torch.arange(k)[None, :]).abs().double()
    time = (rho[..., None, None] ** lags).to(channels.dtype)  # (H, Wf, K, K)
    cov = torch.einsum("hwij,hwab->hwiajb", time, channels).reshape(*rho.shape, k * c, k * c)
    eye = torch.eye(k * c, dtype=cov.dtype)
    gain = cov @ torch.linalg.inv(cov + sigma**2 * eye)
    spectrum = torch.fft.rfft2(y.double() - m, norm="ortho")  # (n, K, C, H, Wf)
    flat = spectrum.permute(0, 3, 4, 1, 2).reshape(n, *rho.shape, k * c)
    filtered = torch.einsum("hwij,nhwj->nhwi", gain, flat).reshape(n, *rho.shape, k, c)
    return m + torch.fft.irfft2(filtered.permute(0, 3, 4, 1, 2), s=SHAPE[1:], norm="ortho")


@pytest.mark.parametrize("sigma", [1e-3, 0.3, 3.0, 1e3])
@pytest.mark.parametrize("temporal", [False, True])
def test_the_spectral_skip_makes_a_fresh_denoiser_the_wiener_estimate(sigma, temporal):
    """With the network's output still zero (fresh ``conv_out``), the denoiser is the posterior
    mean of the blanket under the fitted prior: the climatological mean ``m(t)`` and, per
    spatial Fourier mode, the channels' covariance and (``temporal``) the lag correlation
    between states (without it each state is estimated alone)."""
    torch.manual_seed(0)
    backbone = ReferenceBackbone(SHAPE, **KWARGS, spectral_skip=True).eval()
    generator = torch.Generator().manual_seed(1)
    red = 1 / (1 + torch.arange(SHAPE[2] // 2 + 1.0)) ** 2  # a red zonal spectrum
    states = torch.fft.irfft2(
        torch.fft.rfft2(ar1_states(500, 0.9, 1.0, generator), norm="ortho") * red.sqrt(),
        s=SHAPE[1:],
        norm="ortho",
    )
    states[:, 1] = 0.6 * states[:, 0] + 0.8 * states[:, 1]  # correlated channels
    dates = hourly(500)
    states = states + 0.7 + 0.5 * climatology_features(dates)[:, 5, None, None, None]
    pairs = torch.stack([torch.arange(499), torch.arange(1, 500)], dim=1) if temporal else None
    backbone.fit_states(states, dates, pairs)
    assert (backbone.lag_correlation.mean() > 0.8) == temporal
    x, _, dates = inputs()
    y = 0.7 + x * 0.4 + sigma * torch.randn(x.shape, generator=generator)
    denoised = PreconditionedDenoiser(backbone)(y, torch.full((len(y),), sigma), dates)
    expected = blanket_posterior_mean(backbone, y, sigma, dates)
    scale = max(1.0, sigma)
    torch.testing.assert_close(denoised.double(), expected, atol=2e-5 * scale, rtol=1e-4)
