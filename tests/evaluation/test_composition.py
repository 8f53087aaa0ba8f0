"""What composition does, in standard errors: the statistics, their calibration on trajectories
that compose nothing, and their power on trajectories with jumps at the seams.

The synthetic world's own trajectories stand in for composed ones (a composition that changes
nothing): every test passes at the stated false-fail rate. The same trajectories with a jump at
every seam fail the seam criterion, and only it.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import torch

from priorflow.config import CheckConfig
from priorflow.data.archive import open_archive
from priorflow.data.synthetic import default_world
from priorflow.errors import ConfigError
from priorflow.evaluation.blanket_samples import archive_windows
from priorflow.evaluation.blanket_stats import member_anomalies, window_anomalies
from priorflow.evaluation.composition import (
    Units,
    composition_tests,
    segments,
    trajectory_features,
)
from priorflow.evaluation.composition_check import composition_findings, window_step
from priorflow.evaluation.learned import judge_tests
from priorflow.evaluation.metrics import seam_boundaries
from tests._check_runs import shared_archive

STARTS = [datetime(2000, 3, 20, 0), datetime(2000, 5, 10, 6), datetime(2000, 7, 1, 12),
          datetime(2000, 9, 15, 18)]  # fmt: skip
T, K, O = 48, 8, 4
LAGS = list(range(1, 13))
SEAMS = seam_boundaries(T, K, O)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return open_archive(shared_archive(tmp_path_factory))


def _world_units(archive, members: int, seed: int, jump: float = 0.0):
    """True trajectories as the composed sample (each blanket's states offset by ``jump`` times
    a random sign per member, channel and blanket), true blankets, archive windows."""
    world = default_world()
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    def draw(start: datetime, length: int, n: int) -> np.ndarray:
        times = np.datetime64(start, "ns") + np.arange(length) * np.timedelta64(1, "h")
        return np.stack([world.sample(times, generator) for _ in range(n)]).astype(np.float64)

    composed, blankets, windows = [], [], []
    for start in STARTS:
        x = draw(start, T, members)
        for lo, hi in segments(T, SEAMS):
            x[:, lo:hi] += jump * rng.choice([-1.0, 1.0], size=(members, 1, x.shape[2], 1, 1))
        composed.append(trajectory_features(member_anomalies(x), LAGS))
        blankets.append(trajectory_features(member_anomalies(draw(start, K, 32)), range(1, K)))
        y, shifts = archive_windows(archive, start, T, 1, 15, window_step(T, 1))
        windows.append(trajectory_features(window_anomalies(y.astype(np.float64), shifts), LAGS))
    return Units.stack(composed), Units.stack(blankets), Units.stack(windows)


def _judge(units, config=None):
    config = config or CheckConfig()
    tests = composition_tests(*units, seams=SEAMS, blanket_size=K, lags=LAGS, seed=0)
    judged = judge_tests(tests, config, config.composition_tolerance_of)
    return judged, composition_findings(judged, "composition-48h", config)


def test_features_of_a_known_trajectory():
    a = np.zeros((1, 4, 1, 2))
    a[0, :, 0, :] = [[1, 1], [2, 2], [2, 0], [0, 0]]
    f = trajectory_features(a, [1, 3])
    np.testing.assert_allclose(f["square"][0, :, 0], [1, 4, 2, 0])
    np.testing.assert_allclose(f["increment"][0, :, 0], [0, 1, 2, 2])
    # lag 1, pairs (0, 1), (1, 2), (2, 3) at both points: products, left and right squares
    np.testing.assert_allclose(f["lag"][0, :, 0, 0], [8 / 6, 14 / 6, 12 / 6])
    np.testing.assert_allclose(f["lag"][0, :, 1, 0], [0, 1, 0])
    assert segments(10, [6]) == [(0, 6), (6, 10)]
    assert segments(48, SEAMS)[1] == (6, 10) and len(segments(48, SEAMS)) == 11


def test_trajectories_that_compose_nothing_pass(archive):
    judged, findings = _judge(_world_units(archive, members=4, seed=0))
    assert [f.criterion for f in findings] == [
        "seams", "autocorrelation", "autocorrelation_beyond", "variance",
    ]  # fmt: skip
    assert all(f.ok for f in findings), [f.message for f in findings]
    z = np.array([j.test.z for j in judged])
    assert 0.7 < z.std() < 1.5  # the standard errors are the spread of z
    against = {(j.test.criterion, j.test.against) for j in judged}
    assert against == {
        ("seams", "stationary"), ("seams", "blankets"), ("autocorrelation", "blankets"),
        ("autocorrelation", "archive"), ("autocorrelation_beyond", "archive"),
        ("variance", "blankets"),
    }  # fmt: skip
    # 4 channels: 2 seam tests, lags 1-7 against the blankets, 1-12 against the archive, the
    # whole trajectory and its 11 blankets' states
    assert len(judged) == 4 * (2 + 7 + 12 + 12)
    assert judged[0].test.df == 4 * 4 - 4


def test_jumps_at_the_seams_fail_the_seam_criterion(archive):
    units = _world_units(archive, members=4, seed=0, jump=0.2)
    judged, findings = _judge(units)
    failed = [f for f in findings if not f.ok]
    assert [f.criterion for f in failed] == ["seams"], [f.message for f in findings]
    assert "across seams" in failed[0].message and "standard errors above" in failed[0].message
    index = [j.test for j in judged if j.test.against == "stationary"]
    assert all(t.composed > 1.3 for t in index)  # the seam index
    # the tolerance loosens only its own criterion
    _, loose = _judge(units, CheckConfig(composition_tolerance={"seams": 3}))
    assert all(f.ok for f in loose)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_trajectories_that_compose_nothing_pass_other_seeds(archive, seed):
    _, findings = _judge(_world_units(archive, members=4, seed=seed))
    assert all(f.ok for f in findings), [f.message for f in findings]


def test_composition_tolerance_is_checked():
    assert CheckConfig(composition_tolerance={"variance": 2}).composition_tolerance_of(
        "variance"
    ) == 2.0  # fmt: skip
    assert CheckConfig().composition_tolerance_of("seams") == 1.0
    with pytest.raises(
        ConfigError, match=r"^check\.composition_tolerance\.spectrum: unknown criterion — one of"
    ):
        CheckConfig.parse({"composition_tolerance": {"spectrum": 2}})
    with pytest.raises(
        ConfigError, match=r"^check\.composition_tolerance\.seams: -1.0 — a factor"
    ):
        CheckConfig.parse({"composition_tolerance": {"seams": -1}})
