r"""The verdict "did the denoiser learn?": the model's own blankets against the archive's windows.

:func:`learned_findings` takes the tests of :func:`~priorflow.evaluation.blanket_stats.blanket_tests`
(each a statistic of the model's blankets, the archive's value at the same dates and hours, the
standard error of the difference and :math:`z`) and fails a test when

.. math::
    |z| > \tau_c\, t_\nu^{-1}\!\left(1 - \frac{\alpha}{2m}\right),

with :math:`\alpha` = ``check.false_fail_rate``, :math:`m` the number of tests of the verdict
(every criterion, channel, lag, band and date together), :math:`\nu` the test's degrees of
freedom and :math:`\tau_c` = ``check.tolerance.<criterion>`` (1 by default). At
:math:`\tau_c = 1` a model that samples the archive's distribution fails with probability at most
:math:`\alpha` (Bonferroni), whatever the numbers of members, dates and archive windows.

One :class:`~priorflow.evaluation.verdict.Finding` per criterion (mean, std, autocorrelation,
spectrum, cross_channel), its value the worst :math:`z`, its message naming the channel, lag,
band or date and the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from priorflow.config import CheckConfig
from priorflow.config.check import LEARNED_CRITERIA
from priorflow.evaluation.blanket_samples import BlanketSamples
from priorflow.evaluation.blanket_stats import BlanketTest
from priorflow.evaluation.significance import z_threshold
from priorflow.evaluation.verdict import Finding

if TYPE_CHECKING:
    from priorflow.evaluation.composition import CompositionTest

__all__ = ["JudgedTest", "criterion_tests", "judge_tests", "judged_dataset", "learned_findings"]


@dataclass(frozen=True)
class JudgedTest:
    """A test (a :class:`BlanketTest`, or a composition test) with its threshold on :math:`|z|`
    and whether it passed."""

    test: BlanketTest | CompositionTest
    threshold: float
    ok: bool


def judge_tests(
    tests: list[Any], config: CheckConfig, tolerance: Callable[[str], float] | None = None
) -> list[JudgedTest]:
    """Every test (with ``criterion``, ``z`` and ``df``) against its threshold (module
    docstring); ``tolerance`` maps a criterion to its factor (default: ``check.tolerance``)."""
    factor = tolerance or config.tolerance_of
    m = len(tests)
    judged = []
    for test in tests:
        threshold = z_threshold(config.false_fail_rate, m, test.df) * factor(test.criterion)
        judged.append(JudgedTest(test, threshold, bool(abs(test.z) <= threshold)))
    return judged


def criterion_tests(
    judged: list[JudgedTest], criterion: str
) -> tuple[list[JudgedTest], JudgedTest | None]:
    """The judged tests of ``criterion`` and the worst of them (largest :math:`|z|` /
    threshold; None when there are none)."""
    own = [j for j in judged if j.test.criterion == criterion]
    return own, max(own, key=lambda j: abs(j.test.z) / j.threshold, default=None)


def learned_findings(judged: list[JudgedTest], group: str, config: CheckConfig) -> list[Finding]:
    """One finding per criterion: the test with the largest :math:`|z|` / threshold."""
    findings = []
    m = len(judged)
    for criterion in LEARNED_CRITERIA:
        own, worst = criterion_tests(judged, criterion)
        if worst is None:
            continue
        failed = sum(not j.ok for j in own)
        t = worst.test
        direction = "above" if t.z > 0 else "below"
        message = (
            f"{group} {criterion}: {t.label} is {t.model:.4g}, the archive's {t.archive:.4g} "
            f"({abs(t.z):.1f} standard errors {direction}, SE {t.se:.2g}; allowed |z| <= "
            f"{worst.threshold:.2f}"
        )
        message += (
            f"; {failed} of {len(own)} tests fail)"
            if failed
            else f"; {len(own)} tests, {_rate(config, m)})"
        )
        findings.append(
            Finding(
                group,
                criterion,
                failed == 0,
                float(t.z),
                f"|z| <= {worst.threshold:.2f}",
                message,
            )
        )
    return findings


def _rate(config: CheckConfig, tests: int) -> str:
    return f"false-fail rate {config.false_fail_rate:g} over {tests} tests"


def judged_dataset(judged: list[JudgedTest], fields: tuple[str, ...]) -> Any:
    """Every judged test as an ``xarray.Dataset`` along ``test`` (the metrics store's tables):
    ``criterion``, ``label``, the test's ``fields`` (what was compared), ``se``, ``z``, then its
    ``threshold`` on :math:`|z|` and ``ok``."""
    import xarray as xr

    names = ("criterion", "label", *fields, "se", "z")
    columns = {name: np.array([getattr(j.test, name) for j in judged]) for name in names}
    columns["threshold"] = np.array([j.threshold for j in judged])
    columns["ok"] = np.array([j.ok for j in judged])
    return xr.Dataset(
        {k: ("test", v.astype(str) if v.dtype.kind == "U" else v) for k, v in columns.items()}
    )


@dataclass
class LearnedResult:
    """The learned verdict of a run: its findings, every judged test, and what was sampled."""

    group: str
    findings: list[Finding]
    judged: list[JudgedTest]
    description: dict[str, object]
    ranks: np.ndarray | None = None  # (C, M + 1) rank histogram (priorflow.evaluation.ranks)
    samples: BlanketSamples | None = None

    @property
    def passed(self) -> bool:
        return all(f.ok for f in self.findings)


def blanket_spec(spec: object, config: CheckConfig) -> object:
    """The run's sampling spec with the check's blanket sampler (``blanket_sampler: run``: as
    is)."""
    import dataclasses

    if config.blanket_sampler == "run":
        return spec
    return dataclasses.replace(
        spec,
        sampler=config.blanket_sampler,
        sampler_config=dict(config.blanket_sampler_config),
        num_steps=config.blanket_steps,
    )


def run_model(attrs: dict[str, object], model: object = None) -> object:
    """The run's model: ``model`` when given (a loaded model or a path), else the store's
    ``model_path``/``model_target``, refused when its checkpoint is not the run's."""
    from priorflow.errors import ModelError
    from priorflow.models.loading import load_model

    if model is not None and hasattr(model, "denoiser"):
        return model
    loaded = load_model(
        str(model if model is not None else attrs["model_path"]),
        str(attrs.get("model_target") or "best"),
    )
    recorded = attrs.get("checkpoint_sha256")
    if model is None and recorded and loaded.checkpoint_sha256 != recorded:
        raise ModelError(
            f"model: the checkpoint {loaded.checkpoint} is not the one the run used (sha256 "
            f"{str(loaded.checkpoint_sha256)[:12]}..., the run's {str(recorded)[:12]}...); the "
            "learned verdict judges the run's model: restore it, or give --set check.learned=false"
        )
    return loaded


def check_blankets(
    attrs: dict[str, object],
    starts: list[object],
    archive: object,
    config: CheckConfig,
    model: object = None,
    progress: object = None,
) -> LearnedResult:
    """Sample the model's blankets at the run's start dates, read the archive's windows, and
    judge them (module docstring), and rank the archive's values among the blankets (a diagnostic,
    :mod:`priorflow.evaluation.ranks`). ``attrs``: the store's root attributes (the sampling
    spec)."""
    from priorflow.evaluation.blanket_samples import sample_blankets
    from priorflow.evaluation.blanket_stats import blanket_tests
    from priorflow.evaluation.ranks import rank_histogram
    from priorflow.plan import SamplingSpec

    spec = blanket_spec(SamplingSpec.from_attrs(attrs), config)
    loaded = run_model(attrs, model)
    samples = sample_blankets(
        loaded,
        spec,
        archive,
        starts,
        members=config.blanket_members,
        window_days=config.blanket_window_days,
        progress=progress,
    )
    tests = blanket_tests(samples, resamples=config.bootstrap_resamples, seed=int(spec.seed))
    judged = judge_tests(tests, config)
    group = f"blankets-{samples.blanket_size}"
    description = {
        "blanket_size": samples.blanket_size,
        "dates": len(starts),
        "members": config.blanket_members,
        "archive_windows": [len(a) for a in samples.archive],
        "sampler": spec.sampler,
        "sampler_config": dict(spec.sampler_config),
        "steps": spec.num_steps,
        "tests": len(tests),
        "false_fail_rate": config.false_fail_rate,
        "lags": list(range(1, samples.blanket_size)),
    }
    findings = learned_findings(judged, group, config)
    ranks = rank_histogram(samples, seed=int(spec.seed))
    return LearnedResult(group, findings, judged, description, ranks, samples)
