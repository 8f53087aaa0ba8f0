"""evaluate_group on its own: the metrics dataset's layout, and its scores where they are known
exactly (a prior that is the truth scores zero; a diverged date is named and left out)."""

from __future__ import annotations

import numpy as np
import pytest

from priorflow.data.archive import open_archive
from priorflow.evaluation.evaluate import evaluate_group
from tests._check_runs import (
    copy_run,
    group_dataset,
    rewrite_latent,
    shared_archive,
    shared_exact_run,
)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return open_archive(shared_archive(tmp_path_factory))


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    return shared_exact_run(tmp_path_factory)


def test_layout_of_the_metrics(exact_run, archive):
    metrics = evaluate_group(group_dataset(exact_run, "48h"), archive, max_lag=6)
    assert list(metrics["source"].values) == ["prior", "climatology", "persistence"]
    assert list(metrics["sample"].values) == ["prior", "archive"]
    assert list(metrics["pairs"].values) == ["all", "inside", "across"]
    assert list(metrics["lag"].values) == [1, 2, 3, 4, 5, 6]
    assert metrics["rmse"].dims == ("source", "lead", "channel")
    assert metrics["rmse"].shape == (3, 48, 4)
    assert metrics["acf"].dims == ("sample", "pairs", "lag", "channel")
    assert metrics["spectrum"].dims == ("sample", "channel", "wavenumber")
    assert metrics.sizes["wavenumber"] == 32 // 2 + 1
    # every start date's plume, and maps at the middle state (lead 24 h) of the plot channels
    assert metrics["plume_prior"].dims == ("start_date", "member", "lead", "plot_channel")
    assert metrics["plume_prior"].shape == (4, 4, 48, 2)
    assert metrics["plume_truth"].shape == (4, 48, 2)
    assert [str(d)[:13] for d in metrics["start_date"].values] == [
        "2000-03-20T00", "2000-05-10T06", "2000-07-01T12", "2000-09-15T18",
    ]  # fmt: skip
    assert metrics["map_mean"].dims == (
        "start_date",
        "map_source",
        "plot_channel",
        "map_y",
        "map_x",
    )
    assert metrics["map_std"].shape == (4, 2, 2, 16, 32)
    assert list(metrics["map_source"].values) == ["prior", "climatology"]
    assert metrics.attrs["map_lead"] == 24
    attrs = metrics.attrs
    assert (attrs["group"], attrs["states"], attrs["members"], attrs["dates"]) == ("48h", 48, 4, 4)
    assert (attrs["blanket_size"], attrs["overlap"], attrs["fold_mode"]) == (8, 4, "symmetrical")
    assert attrs["seams"] == [6, 10, 14, 18, 22, 26, 30, 34, 38, 42]  # a + S, then every S
    assert attrs["nonfinite_members"] == [] and attrs["point"] == [8, 16]  # the grid middle
    # one member per source: persistence has no spread, hence no spread-skill ratio
    assert np.isnan(metrics["ssr"].sel(source="persistence")).all()


def test_a_prior_that_is_the_truth_scores_zero(exact_run, archive, tmp_path):
    run = copy_run(exact_run, tmp_path / "truth")
    valid = group_dataset(run, "48h")["valid_time"].values  # (dates, leads)
    truth = np.stack([archive.states(times) for times in valid])  # (dates, leads, *state)
    rewrite_latent(run, "48h", lambda x: np.broadcast_to(truth[:, None], x.shape).copy())
    metrics = evaluate_group(group_dataset(run, "48h"), archive)
    prior = metrics.sel(source="prior")
    assert float(np.abs(prior["rmse"]).max()) < 1e-5
    assert float(np.abs(prior["spread"]).max()) < 1e-5
    assert float(np.abs(prior["crps"]).max()) < 1e-5
    # the maps: the members' mean is the truth at the middle state, their spread zero
    maps = metrics.sel(map_source="prior")
    np.testing.assert_allclose(maps["map_mean"].values, truth[:, 24, :2], atol=1e-5)
    assert float(np.abs(maps["map_std"]).max()) < 1e-5
    persistence = metrics["rmse"].sel(source="persistence")
    assert float(persistence.isel(lead=0).max()) < 1e-5  # the start state itself
    assert float(persistence.isel(lead=-1).min()) > 0.1
    assert float(metrics["rmse"].sel(source="climatology").min()) > 0.1


def test_a_diverged_date_is_named_and_left_out(exact_run, archive, tmp_path):
    run = copy_run(exact_run, tmp_path / "nan")

    def poison(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[1] = np.nan  # every member of the second start date
        return x

    rewrite_latent(run, "48h", poison)
    metrics = evaluate_group(group_dataset(run, "48h"), archive)
    assert metrics.attrs["dates"] == 3
    assert metrics.attrs["nonfinite_members"] == [f"2000-05-10T06-m{m}" for m in range(4)]
    assert metrics.sizes["start_date"] == 3  # no plume nor map of the diverged date
    assert np.isfinite(metrics["rmse"].sel(source="prior")).all()


def test_a_store_of_schema_1_is_still_evaluated(exact_run, archive):
    """Runs written before the sampling spec named K and O ``blanket_size`` and ``overlap``."""
    dataset = group_dataset(exact_run, "48h")
    old = dataset.copy()
    old.attrs = {k: v for k, v in dataset.attrs.items() if k not in ("card", "blanket_overlap")}
    old.attrs |= {"blanket_size": 8, "overlap": 4}
    metrics = evaluate_group(old, archive, max_lag=3)
    new = evaluate_group(dataset, archive, max_lag=3)
    assert metrics.attrs["seams"] == new.attrs["seams"]
    assert np.array_equal(metrics["acf"].values, new["acf"].values, equal_nan=True)
