r"""The verdict "what does composition do?": composed trajectories against the model's blankets.

For every size of a run that composes blankets (``T > K``: it has seams),
:func:`check_composition` reads one start date at a time (the members, then the archive's
windows of ``T`` states at the same hours, :func:`window_step` days apart so that they are
nearly independent) and keeps only per-unit features, so its memory is one date's members and
windows. Where the archive holds fewer than 8 such windows of a date, the size is compared with
the blankets alone (the description says why). The blankets are the learned verdict's
(:class:`~priorflow.evaluation.blanket_samples.BlanketSamples`, sampled at the run's start
dates). The statistics and their standard errors are :mod:`priorflow.evaluation.composition`'s.
A test fails when

.. math::
    |z| > \tau_c\, t_\nu^{-1}\!\left(1 - \frac{\alpha}{2m}\right),

:math:`\alpha` = ``check.false_fail_rate``, :math:`m` the composition tests of the whole run
(every size, criterion, channel, lag and segment), :math:`\tau_c` =
``check.composition_tolerance.<criterion>`` (1 by default): a composition that changes nothing
fails with probability at most :math:`\alpha`. One finding per size and criterion (its worst
test); ``check.composition`` makes the failures warnings (``warn``) or reasons (``fail``).
Sizes with fewer than 3 members per date are not judged (the anomalies of 2 members are one
number, their spread no standard error).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.config import CheckConfig
from priorflow.config.check import COMPOSITION_CRITERIA
from priorflow.errors import ArchiveError
from priorflow.evaluation.blanket_samples import BlanketSamples, archive_windows, channel_axis
from priorflow.evaluation.blanket_stats import member_anomalies, window_anomalies
from priorflow.evaluation.composition import (
    AGAINST,
    CompositionTest,
    Units,
    composition_tests,
    segments,
    trajectory_features,
)
from priorflow.evaluation.learned import JudgedTest, criterion_tests, judge_tests, judged_dataset
from priorflow.evaluation.metrics import seam_boundaries
from priorflow.evaluation.verdict import Finding

__all__ = [
    "CompositionResult",
    "check_composition",
    "composition_dataset",
    "composition_findings",
    "size_tests",
]


@dataclass
class CompositionResult:
    """The composition verdict of one size: findings, every judged test, what was compared."""

    group: str
    findings: list[Finding]
    judged: list[JudgedTest]
    description: dict[str, Any]


def _as_datetime(value: np.datetime64) -> datetime:
    return np.datetime64(value, "s").astype(datetime)


def blanket_units(blankets: BlanketSamples, dates: Sequence[int]) -> Units:
    """The blankets' features at the given date indices: anomalies, lags ``1..K-1``."""
    lags = range(1, blankets.blanket_size)
    return Units.stack(
        [trajectory_features(member_anomalies(blankets.model[d]), lags) for d in dates]
    )


def window_step(states: int, dt_hours: int) -> int:
    """Days between archive windows of ``states`` states: their span and a day more, so that
    neighbours neither overlap nor touch (windows that do are correlated: their residuals of
    the drift fit then underestimate the covariance at long lags, and the bootstrap their
    standard error; measured on the synthetic world, lag 12 of 48-state windows: z = -3 with
    daily windows, -1 two days apart, 0 three days apart)."""
    return math.ceil(states * dt_hours / 24) + 1


def size_tests(
    dataset: Any,
    blankets: BlanketSamples,
    archive: Any,
    config: CheckConfig,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[CompositionTest], dict[str, Any]] | None:
    """The composition tests of one store group (a lazy ``xarray.Dataset``) and what they
    compared; None when the size composes nothing (no seams) or has fewer than 3 finite members
    on every date."""
    say = progress or (lambda line: None)
    attrs = dataset.attrs
    latent = dataset["latent"]
    D, M, T = (int(n) for n in latent.shape[:3])
    K = int((attrs.get("card") or {}).get("blanket_size") or attrs["blanket_size"])
    overlap = int(attrs.get("blanket_overlap", attrs.get("overlap", 0)))
    fold = str(attrs.get("fold_mode", "symmetrical"))
    dt = int(attrs.get("dt_hours", blankets.dt_hours))
    seams = seam_boundaries(T, K, overlap, fold)
    if seams.size == 0 or M < 3:
        return None
    group = str(attrs.get("span_hours", T * dt)) + "h"
    axis = channel_axis(latent.dims[3:])
    lags = list(range(1, min(int(config.max_lag), T - 1) + 1))
    by_start = {s: i for i, s in enumerate(blankets.starts)}
    step = window_step(T, dt)
    composed, windows, chosen = [], [], []
    missing = ""  # why the archive is not compared, if it is not
    for d in range(D):
        start = _as_datetime(dataset["start_date"].values[d])
        x = np.moveaxis(np.asarray(latent[d].values, dtype=np.float64), 2 + axis, 2)
        x = x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]
        if len(x) < 3 or start not in by_start:
            continue
        say(f"{group}: composition at {start:%Y-%m-%d %Hh}, {len(x)} members")
        composed.append(trajectory_features(member_anomalies(x), lags))
        chosen.append(by_start[start])
        if missing:
            continue
        try:
            states, shifts = archive_windows(
                archive, start, T, dt, config.blanket_window_days, step
            )
        except ArchiveError as error:
            missing = str(error)
            continue
        y = np.moveaxis(states.astype(np.float64), 2 + axis, 2)
        windows.append(trajectory_features(window_anomalies(y, shifts), lags))
        del x, y, states
    if not composed:
        return None
    tests = composition_tests(
        Units.stack(composed),
        blanket_units(blankets, chosen),
        None if missing else Units.stack(windows, fitted=2),
        seams=seams,
        blanket_size=K,
        lags=lags,
        channels=_channels(dataset, axis),
        resamples=config.bootstrap_resamples,
        seed=seed,
    )
    description = {
        "size": group,
        "states": T,
        "blanket_size": K,
        "overlap": overlap,
        "fold_mode": fold,
        "seams": [int(q) for q in seams],
        "segments": [list(s) for s in segments(T, seams)],
        "dates": len(composed),
        "members": M,
        "blankets": int(blankets.model.shape[1]),
        "archive_windows": [] if missing else [len(w["square"]) for w in windows],
        "window_step_days": step,
        "archive_missing": missing,
        "lags": lags,
    }
    return tests, description


def _channels(dataset: Any, axis: int) -> list[str]:
    dim = dataset["latent"].dims[3 + axis]
    if dim in dataset.coords:
        return [str(c) for c in dataset[dim].values]
    return [str(c) for c in range(dataset["latent"].shape[3 + axis])]


def check_composition(
    run_dir: str | os.PathLike[str],
    groups: Sequence[str],
    blankets: BlanketSamples,
    archive: Any,
    config: CheckConfig,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[CompositionResult]:
    """Judge every size of ``groups`` that composes blankets (module docstring); one result
    per such size, the tests judged together (Bonferroni over all of them)."""
    from priorflow.store import open_group

    sized = []
    for group in groups:
        done = size_tests(
            open_group(Path(run_dir), group),
            blankets,
            archive,
            config,
            seed=seed,
            progress=progress,
        )
        if done is not None:
            sized.append(done)
    judged = judge_tests(
        [t for tests, _ in sized for t in tests], config, config.composition_tolerance_of
    )
    results, first = [], 0
    for tests, description in sized:
        own = judged[first : first + len(tests)]
        first += len(tests)
        name = f"composition-{description['size']}"
        description = {
            **description,
            "tests": len(tests),
            "run_tests": len(judged),
            "false_fail_rate": config.false_fail_rate,
        }
        results.append(
            CompositionResult(
                name, composition_findings(own, name, config, len(judged)), own, description
            )
        )
    return results


def composition_findings(
    judged: list[JudgedTest], group: str, config: CheckConfig, tests: int | None = None
) -> list[Finding]:
    """One finding per criterion: the test with the largest :math:`|z|` / threshold."""
    findings = []
    m = tests if tests is not None else len(judged)
    for criterion in COMPOSITION_CRITERIA:
        own, worst = criterion_tests(judged, criterion)
        if worst is None:
            continue
        failed = sum(not j.ok for j in own)
        t = worst.test
        direction = "above" if t.z > 0 else "below"
        reference = AGAINST[t.against]
        if t.against != "stationary":
            reference += f" {t.reference:.4g}"
        message = (
            f"{group} {criterion}: {t.label} is {t.composed:.4g}, {reference} "
            f"({abs(t.z):.1f} standard errors {direction}, SE {t.se:.2g}; "
            f"allowed |z| <= {worst.threshold:.2f}"
        )
        message += (
            f"; {failed} of {len(own)} tests fail)"
            if failed
            else f"; {len(own)} tests, false-fail rate {config.false_fail_rate:g} over {m})"
        )
        findings.append(
            Finding(
                group, criterion, failed == 0, float(t.z), f"|z| <= {worst.threshold:.2f}", message
            )
        )
    return findings


def composition_dataset(result: CompositionResult) -> Any:
    """Every judged test of one size as an ``xarray.Dataset`` along ``test`` (``metrics.zarr``
    group ``composition-<size>``), what was compared in its attributes."""
    ds = judged_dataset(result.judged, ("against", "composed", "reference"))
    ds.attrs = {**result.description, "group": result.group}
    return ds
