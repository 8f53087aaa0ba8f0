"""The composition verdict on a run of the exact model: composing its blankets (K = 8, O = 4)
decorrelates the trajectory beyond the blanket, and the verdict names it; the seams and the
variance show what composition does, as measured (docs/check.md)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import xarray as xr

from priorflow.config import CheckConfig
from priorflow.data.archive import open_archive
from priorflow.evaluation.blanket_samples import sample_blankets
from priorflow.evaluation.composition_check import (
    check_composition,
    composition_dataset,
    size_tests,
)
from priorflow.evaluation.learned import blanket_spec, run_model
from priorflow.plan import SamplingSpec
from priorflow.store import open_group, read_store_attrs, store_path
from tests._check_runs import (
    make_run,
    shared_archive,
    shared_exact_model,
    shared_exact_run,
    shared_two_year_archive,
)


def _blankets(run, archive, members: int):
    """``members`` blankets per start date of ``run``, sampled as the learned verdict does."""
    attrs = read_store_attrs(store_path(run))
    config = CheckConfig(learned=True, blanket_members=members)
    starts = [
        np.datetime64(t, "s").astype(datetime) for t in open_group(run, 48)["start_date"].values
    ]
    spec = blanket_spec(SamplingSpec.from_attrs(attrs), config)
    return sample_blankets(
        run_model(attrs), spec, archive, starts, members=members, window_days=15
    )


def _composition(run, archive, blankets):
    (result,) = check_composition(run, ["48h"], blankets, archive, CheckConfig(learned=True))
    return result


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The exact run (4 dates x 4 members x 48 states), its archive, 16 blankets per date."""
    run = shared_exact_run(tmp_path_factory)
    archive = open_archive(shared_archive(tmp_path_factory))
    return run, archive, _blankets(run, archive, 16)


@pytest.fixture(scope="module")
def exact(inputs):
    return _composition(*inputs)


def _tests(result, criterion, against):
    own = [
        j.test for j in result.judged if (j.test.criterion, j.test.against) == (criterion, against)
    ]
    return {t.label: t for t in own}


def test_composition_decorrelates_beyond_the_blanket_and_is_named(exact):
    assert exact.group == "composition-48h"
    d = exact.description
    assert d["seams"] == [6, 10, 14, 18, 22, 26, 30, 34, 38, 42] and d["members"] == 4
    # archive windows of 48 states 3 days apart (they neither overlap nor touch), 1 year
    assert d["archive_windows"] == [11, 11, 11, 11] and d["window_step_days"] == 3
    assert d["lags"] == list(range(1, 13)) and d["archive_missing"] == ""
    (finding,) = [f for f in exact.findings if f.criterion == "autocorrelation_beyond"]
    assert not finding.ok
    assert "(beyond the blanket) is" in finding.message and "the archive's" in finding.message
    assert "standard errors below" in finding.message
    archive = _tests(exact, "autocorrelation", "archive")
    lag6 = [archive[f"channel {c} lag 6"] for c in range(4)]
    # the known effect: lag 6 about 0.23 against the world's 0.53
    assert all(t.composed < 0.35 < 0.45 < t.reference for t in lag6)
    assert all(t.z < -8 for t in lag6)
    beyond = _tests(exact, "autocorrelation_beyond", "archive").values()
    assert len(beyond) == 4 * 5 and all(t.composed < t.reference for t in beyond)
    assert all("(beyond the blanket)" in t.label for t in beyond)
    # within the blanket composition decorrelates too: against the model's own blankets
    within = _tests(exact, "autocorrelation", "blankets")
    assert all(within[f"channel {c} lag 6"].z < -8 for c in range(4))


def test_seams_and_variance_are_as_measured(exact):
    index = _tests(exact, "seams", "stationary").values()
    assert all(1.05 < t.composed < 1.35 and t.z > 0 for t in index)  # measured 1.14-1.2
    across = _tests(exact, "seams", "blankets").values()
    assert all(t.composed > t.reference for t in across)
    whole = [t for label, t in _tests(exact, "variance", "blankets").items() if "(all)" in label]
    assert len(whole) == 4
    # the composed variance is about 10 % under the blankets' (std 5 % low)
    assert all(0.8 < t.composed / t.reference < 0.97 and t.z < 0 for t in whole)


def test_the_tests_go_to_a_dataset(exact):
    ds = composition_dataset(exact)
    assert isinstance(ds, xr.Dataset) and ds.sizes["test"] == len(exact.judged)
    assert set(ds.data_vars) == {
        "criterion", "label", "against", "composed", "reference", "se", "z", "threshold", "ok",
    }  # fmt: skip
    assert ds.attrs["group"] == "composition-48h" and ds.attrs["run_tests"] == len(exact.judged)


@pytest.mark.slow
def test_the_exact_model_as_documented(tmp_path_factory):
    """docs/check.md's numbers: 4 dates x 8 members x 48 states, 32 blankets per date, the
    2-year archive (62 windows per date). Every criterion fails: composition decorrelates
    within and beyond the blanket, raises the increments across seams and loses variance."""
    archive = shared_two_year_archive(tmp_path_factory)
    run = make_run(
        tmp_path_factory.mktemp("composition"), shared_exact_model(tmp_path_factory), archive,
        run_id="exact-8", members=8, steps=64,
    )  # fmt: skip
    opened = open_archive(archive)
    result = _composition(run, opened, _blankets(run, opened, 32))
    assert {f.criterion for f in result.findings if not f.ok} == {
        "seams", "autocorrelation", "autocorrelation_beyond", "variance",
    }  # fmt: skip
    index = _tests(result, "seams", "stationary")[
        "channel 0 increment across seams / inside blankets"
    ]
    assert 1.1 < index.composed < 1.25 and index.z > 8
    lag6 = _tests(result, "autocorrelation", "blankets")["channel 0 lag 6"]
    assert lag6.composed == pytest.approx(0.23, abs=0.05) and lag6.reference == pytest.approx(
        0.53, abs=0.05
    )
    lag12 = _tests(result, "autocorrelation_beyond", "archive")[
        "channel 0 lag 12 (beyond the blanket)"
    ]
    assert abs(lag12.composed) < 0.08 and lag12.reference == pytest.approx(0.27, abs=0.05)
    whole = _tests(result, "variance", "blankets")["channel 0 states 0-47 (all)"]
    assert 0.83 < whole.composed / whole.reference < 0.93 and whole.z < -5


def test_without_enough_archive_windows_the_blankets_alone_answer(inputs):
    run, archive, blankets = inputs
    config = CheckConfig(learned=True, blanket_window_days=3)  # days -3, 0, 3: 3 windows
    tests, description = size_tests(open_group(run, 48), blankets, archive, config)
    assert "only 3 archive windows of 48 states" in description["archive_missing"]
    assert description["archive_windows"] == []
    assert {t.against for t in tests} == {"stationary", "blankets"}
    assert "autocorrelation_beyond" not in {t.criterion for t in tests}
