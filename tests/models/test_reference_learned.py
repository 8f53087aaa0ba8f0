"""The shipped reference model has learned the synthetic world.

Prior trajectories drawn from ``models/reference`` with the core sampler, for a few start dates
(four seasons, four hours of day) and members, are compared with the exact statistics of the
world that made its training archive (rebuilt from the card's ``metadata.archive_world``):

- per-channel mean over all states and grid points: within 0.1 of the exact mean at those dates
  (that average is near 0; the mean's pattern, season and warm spot, is checked by the
  regression of the samples on the exact mean's deviations: slope 0.8-1.2);
- per-channel standard deviation of the anomalies (sample minus exact mean): within 15 % of the
  exact anomaly standard deviation;
- lag-1 (one ``dt``) autocorrelation of the anomalies: within 0.05 of the exact ``rho ** dt``;
- the diurnal cycle in phase: the first zonal harmonic of the warm spot (weighted by the
  channels' diurnal amplitudes) has the exact phase to within 1 hour, and its projection on
  the exact harmonic is 80-125 % of the exact amplitude.

Run ``pytest tests/test_reference_learned.py -s`` to see the numbers (models/reference/README.md
lists them). For scale: the exact denoiser sampled the same way gives anomaly std ratios
0.90-0.92 and lag-1 0.87 (the blanket approximation with K = 8, see ``test_exact_model.py``);
the shipped model gives 0.91-0.92 and 0.869-0.873 (models/reference/README.md).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from priorflow.core.dates import state_times
from priorflow.core.generate import generate_trajectory
from priorflow.data.synthetic import SyntheticWorld
from priorflow.data.synthetic_archive import synthetic_archive_spec
from priorflow.models.loading import load_model
from tests._check_runs import learned_verdict, shared_two_year_archive

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "reference"
STARTS = (
    datetime(2000, 1, 10, 0),
    datetime(2000, 4, 3, 6),
    datetime(2000, 7, 15, 12),
    datetime(2000, 10, 20, 18),
)
MEMBERS = 3
LENGTH = 48
OVERLAP = 4
STEPS = 32  # half the card's 64: the same statistics within 0.01, half the time


def world_of(model) -> SyntheticWorld:
    return SyntheticWorld(**synthetic_archive_spec(model.card.metadata)["world"])


def prior_statistics(model, world: SyntheticWorld) -> dict:
    """Sample ``len(STARTS) x MEMBERS`` trajectories and compare them with the world."""
    samples, means = [], []
    for start in STARTS:
        for member in range(MEMBERS):
            trajectory = generate_trajectory(
                model, LENGTH, start, seed=1000 * member + start.month, overlap=OVERLAP,
                steps=STEPS,
            )  # fmt: skip
            samples.append(trajectory.latent.numpy().astype(np.float64))
            means.append(world.mean(state_times(start, LENGTH, model.dt_hours)))
    x, m = np.stack(samples), np.stack(means)  # (J, T, C, H, W)
    a = x - m
    stats: dict = {"mean": [], "exact_mean": [], "std": [], "exact_std": [], "lag1": []}
    for c in range(x.shape[2]):
        stats["mean"].append(x[:, :, c].mean())
        stats["exact_mean"].append(m[:, :, c].mean())
        stats["std"].append(np.sqrt((a[:, :, c] ** 2).mean()))
        stats["exact_std"].append(world.channel_std[c])
        a0, a1 = a[:, :-1, c], a[:, 1:, c]
        stats["lag1"].append((a0 * a1).sum() / np.sqrt((a0**2).sum() * (a1**2).sum()))
    stats["exact_lag1"] = world.lag_correlation(1, model.dt_hours)
    # diurnal cycle: first zonal harmonic, channels weighted by their warm-spot amplitude
    weights = world.diurnal_amp[:, None, None] * np.exp(1j * world.lon)  # (C, 1, W)
    sample_harmonic = (x * weights).sum(axis=(2, 3, 4))  # (J, T)
    exact_harmonic = (m * weights).sum(axis=(2, 3, 4))
    phase = np.angle((sample_harmonic * np.conj(exact_harmonic)).sum())
    stats["diurnal_phase_hours"] = float(np.degrees(phase) / 15)
    # the whole mean pattern (season and warm spot): regression of the samples on the exact
    # mean's deviation from its per-channel average, pooled over channels
    pattern = m - m.mean(axis=(0, 1, 3, 4), keepdims=True)
    stats["mean_pattern_slope"] = float((x * pattern).sum() / (pattern**2).sum())
    projection = (sample_harmonic * np.conj(exact_harmonic)).sum()
    stats["diurnal_amplitude_ratio"] = float(projection.real / (np.abs(exact_harmonic) ** 2).sum())
    stats["finite"] = bool(np.isfinite(x).all())
    return stats


@pytest.mark.slow
def test_reference_model_matches_the_world():
    torch.set_num_threads(2)
    model = load_model(MODEL)
    world = world_of(model)
    stats = prior_statistics(model, world)
    for c in range(len(stats["mean"])):
        print(
            f"channel {c}: mean {stats['mean'][c]:+.3f} (exact {stats['exact_mean'][c]:+.3f}),"
            f" anomaly std {stats['std'][c]:.3f} (exact {stats['exact_std'][c]:.3f},"
            f" {stats['std'][c] / stats['exact_std'][c] - 1:+.1%}), lag-1"
            f" {stats['lag1'][c]:.3f} (exact {stats['exact_lag1']:.3f})"
        )
    print(f"mean pattern slope {stats['mean_pattern_slope']:.3f}")
    print(
        f"diurnal phase error {stats['diurnal_phase_hours']:+.2f} h, amplitude ratio"
        f" {stats['diurnal_amplitude_ratio']:.2f}"
    )
    assert stats["finite"]
    np.testing.assert_allclose(stats["mean"], stats["exact_mean"], atol=0.1)
    np.testing.assert_allclose(stats["std"], stats["exact_std"], rtol=0.15)
    np.testing.assert_allclose(stats["lag1"], stats["exact_lag1"], atol=0.05)
    assert 0.8 < stats["mean_pattern_slope"] < 1.2
    assert abs(stats["diurnal_phase_hours"]) < 1.0
    assert 0.8 < stats["diurnal_amplitude_ratio"] < 1.25


def test_shipped_model_loads_and_records_its_training():
    model = load_model(MODEL)
    card = model.card
    assert card.backbone.target == "priorflow.models.reference:ReferenceBackbone"
    assert card.blanket_size == 8 and card.dt_hours == 1
    assert card.schedule.name == "rectified"
    assert (card.schedule.sigma_min, card.schedule.sigma_max) == (1e-3, 1e3)
    assert card.archive == "../../data/archive.zarr"  # relative to the model directory
    assert card.metadata["command"].startswith("priorflow train --archive data/archive.zarr")
    assert world_of(model).shape == card.state_shape
    assert not (MODEL / "training_state.pt").exists()
    size = sum(p.stat().st_size for p in MODEL.iterdir())
    assert size < 6_000_000  # two checkpoints of 2.6 MB (weights and the skip's statistics)


@pytest.mark.slow
def test_the_shipped_model_passes_the_learned_verdict_of_the_demo(tmp_path_factory):
    """The gate of ``configs/demo.yaml`` and ``configs/nightly.yaml`` (``check.learned``): the
    shipped model's own blankets at the demo's start dates against the archive's windows, every
    criterion in standard errors at the false-fail rate 0.01 (docs/check.md)."""
    torch.set_num_threads(2)
    dates = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["start_dates"]
    archive = shared_two_year_archive(tmp_path_factory)
    verdict = learned_verdict(load_model(MODEL), archive, dates=dates)
    for finding in verdict.findings:
        print(finding.message)
    assert verdict.passed, [f.message for f in verdict.findings if not f.ok]
