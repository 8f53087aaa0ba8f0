"""The learned verdict ("did the denoiser learn?") and its power, proven on exact models.

The exact model of the archive's own world passes at the stated false-fail rate over several
seeds; exact models of subtly wrong worlds fail on the criterion that is wrong, named in the
reasons; weight-scaled and weight-shuffled reference models fail. docs/check.md has the table.
"""

from __future__ import annotations

import pytest

from priorflow.config import CheckConfig
from priorflow.evaluation.blanket_stats import BlanketTest
from priorflow.evaluation.learned import judge_tests, judged_dataset, learned_findings
from priorflow.models.exact import write_exact_model
from priorflow.models.loading import load_model
from tests._check_runs import REFERENCE, corrupt_model, learned_verdict, shared_two_year_archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return shared_two_year_archive(tmp_path_factory)


def _exact(tmp_path_factory, **world):
    name = "-".join(f"{k}{v}" for k, v in world.items()) or "right"
    return load_model(write_exact_model(tmp_path_factory.mktemp("exact") / name, **world))


def _failed(result) -> set[str]:
    return {f.criterion for f in result.findings if not f.ok}


def _test(criterion: str, z: float, df: float = 100) -> BlanketTest:
    return BlanketTest(criterion, "channel 0", 1.0 + z, 1.0, 1.0, z, df)


def test_thresholds_follow_the_false_fail_rate_and_the_tolerance():
    tests = [_test("std", 3.0), _test("autocorrelation", 4.5), _test("mean", -4.0, df=20)]
    judged = judge_tests(tests, CheckConfig())
    # Bonferroni over 3 tests at 1 %: |z| <= t^-1(1 - 0.01/6)
    assert judged[0].threshold == pytest.approx(3.01, abs=0.01)  # t_100
    assert judged[2].threshold > judged[0].threshold  # fewer degrees of freedom, wider
    assert [j.ok for j in judged] == [True, False, False]
    looser = judge_tests(tests, CheckConfig(tolerance={"autocorrelation": 2, "mean": 2}))
    assert all(j.ok for j in looser)
    findings = learned_findings(judged, "blankets-8", CheckConfig())
    failed = [f for f in findings if not f.ok]
    assert [f.criterion for f in failed] == ["mean", "autocorrelation"]
    assert "4.0 standard errors below" in failed[0].message
    assert "allowed |z| <= " in failed[1].message and "1 of 1 tests fail" in failed[1].message
    assert "false-fail rate 0.01 over 3 tests" in findings[1].message


def test_judged_tests_become_the_metrics_table_column_by_column():
    judged = judge_tests([_test("std", 2.0), _test("autocorrelation", 4.5)], CheckConfig())
    ds = judged_dataset(judged, ("model", "archive"))
    assert list(ds.data_vars) == [
        "criterion", "label", "model", "archive", "se", "z", "threshold", "ok",
    ]  # fmt: skip
    assert ds.sizes == {"test": 2}
    assert ds["criterion"].values.tolist() == ["std", "autocorrelation"]
    assert ds["criterion"].dtype.kind == "U"  # text, as zarr stores it
    assert ds["model"].values.tolist() == [3.0, 5.5] and ds["ok"].values.tolist() == [True, False]
    assert ds["threshold"].values[0] == judged[0].threshold


def test_every_criterion_and_lag_is_judged_on_blankets(archive, tmp_path_factory):
    model = _exact(tmp_path_factory)
    result = learned_verdict(model, archive, dates=("2000-05-10 6h",), blanket_members=8)
    assert [f.criterion for f in result.findings] == [
        "mean", "std", "autocorrelation", "spectrum", "cross_channel",
    ]  # fmt: skip
    labels = {j.test.label for j in result.judged if j.test.criterion == "autocorrelation"}
    assert {f"channel 0 lag {lag}" for lag in range(1, 8)} <= labels
    assert result.description["lags"] == list(range(1, 8))
    assert result.description["archive_windows"] == [62]
    assert result.description["tests"] == len(result.judged)
    assert all(j.test.se > 0 for j in result.judged)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_exact_model_of_the_archive_world_passes(archive, tmp_path_factory, seed):
    result = learned_verdict(_exact(tmp_path_factory), archive, seed=seed)
    assert result.passed, [f.message for f in result.findings if not f.ok]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("world", "criterion"),
    [
        ({"rho": 0.85}, "autocorrelation"),
        ({"length_scale": 2.0}, "spectrum"),
        ({"variance": 1.1}, "std"),
        # (at a fixed total variance a stronger season also leaves less to the anomalies: std)
        ({"season_amplitude": (0.8, 1.3)}, "mean"),
    ],
)
def test_exact_models_of_wrong_worlds_fail_on_the_right_criterion(
    archive, tmp_path_factory, world, criterion
):
    result = learned_verdict(_exact(tmp_path_factory, **world), archive)
    assert criterion in _failed(result), [f.message for f in result.findings]
    assert any(f.message.split(":")[0].endswith(criterion) for f in result.findings if not f.ok)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["scaled", "shuffled"])
def test_broken_reference_models_fail(archive, how):
    broken = corrupt_model(load_model(REFERENCE), how)
    result = learned_verdict(broken, archive, dates=("2000-03-20 0h", "2000-07-01 12h"))
    assert not result.passed
    assert _failed(result) & {"mean", "std", "autocorrelation", "spectrum"}
