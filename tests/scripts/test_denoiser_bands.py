"""scripts/denoiser_bands.py: the power a denoiser keeps per noise level, part and band, against
the exact denoiser of the world."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from priorflow.data.synthetic import SyntheticWorld
from priorflow.models.exact import write_exact_model
from priorflow.models.loading import load_model
from tests._check_runs import ROOT, write_archive

_spec = importlib.util.spec_from_file_location(
    "denoiser_bands", ROOT / "scripts" / "denoiser_bands.py"
)
bands = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bands)

SIGMAS = (0.1, 1.0, 3.0)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(
        tmp_path_factory.mktemp("bands") / "archive.zarr", "2000-01-01", "2000-02-29"
    )


def test_zonal_bands_double_up_to_the_nyquist_wavenumber():
    assert bands.zonal_bands(32) == {
        "k0-3": (0, 4),
        "k4-7": (4, 8),
        "k8-15": (8, 16),
        "k16": (16, 17),
    }
    assert bands.zonal_bands(8) == {"k0-3": (0, 4), "k4": (4, 5)}


def test_the_exact_denoiser_keeps_exactly_the_exact_power(archive, tmp_path):
    model = load_model(write_exact_model(tmp_path / "exact"))  # its card records its world
    ratios = bands.band_power_ratios(model, archive, sigmas=SIGMAS, blankets=8)
    assert set(ratios) == {
        (b, p) for b in ("k0-3", "k4-7", "k8-15", "k16") for p in ("slow", "fast")
    }
    for values in ratios.values():
        np.testing.assert_allclose(values, 1.0, rtol=1e-4)


def test_a_world_with_more_variance_keeps_more_slow_large_scale_power(archive, tmp_path):
    """The exact denoiser of a world 10 % more variable, judged against the right world: it keeps
    more of the slow large scales the more noise hides them (its samples would be too variable)."""
    model = load_model(write_exact_model(tmp_path / "wide", variance=1.1))
    ratios = bands.band_power_ratios(
        model, archive, sigmas=SIGMAS, blankets=8, world=SyntheticWorld(seed=0)
    )
    slow = ratios[("k0-3", "slow")]  # at sigmas 0.1, 1, 3: more kept as the noise hides more
    assert slow[0] < slow[1] < slow[2] and slow[2] > 1.02, slow
    assert "| k0-3 | slow | " in bands.table(ratios, SIGMAS)


def test_a_model_without_a_synthetic_world_is_refused():
    model = SimpleNamespace(path="models/appa", card=SimpleNamespace(metadata={"kind": "appa"}))
    with pytest.raises(SystemExit, match="records no synthetic world"):
        bands.world_of(model)


@pytest.mark.parametrize(("metadata", "expected"), [({}, 10), ({"val_every_days": 7}, 7)])
def test_the_blankets_come_from_the_days_the_model_held_out(metadata, expected):
    model = SimpleNamespace(path="m", card=SimpleNamespace(metadata=metadata))
    assert bands.held_out_every(model) == expected


@pytest.mark.parametrize("value", [1, "10", 2.5, True])
def test_an_unusable_held_out_setting_is_refused(value):
    model = SimpleNamespace(path="m", card=SimpleNamespace(metadata={"val_every_days": value}))
    with pytest.raises(SystemExit, match="val_every_days"):
        bands.held_out_every(model)
