r"""The prior check of a finished run: two verdicts with reasons, metrics, plots, a report.

:func:`run_check` answers two questions and writes, atomically, a new folder per check
(:mod:`priorflow.evaluation.check_folders`; earlier checks are kept) ::

    <run_dir>/check/<UTC time>/metrics.zarr   one group per size (the composed run's metrics)
                                              ``blankets`` (every learned test, the rank
                                              histograms) and ``composition-<size>``
                                              (every composition test), the verdicts in attrs
    <run_dir>/check/<UTC time>/report.md      verdicts, every threshold and lag, key numbers,
                                              the plots
    <run_dir>/check/<UTC time>/*.png          per size: plumes and maps per start date,
                                              autocorrelation/seams, skill/spread, spectra;
                                              ``blankets-<K>-ranks.png``
    <run_dir>/check/latest -> <UTC time>      the newest check (a relative symbolic link)

and returns a small :class:`CheckResult` (what a Prefect task returns).

**Did the denoiser learn?** (``check.learned``, the gate): the model's own blankets (``K``
states sampled at once, no composition) at the run's start dates against the archive's
``K``-state windows at the same dates and hours: mean per channel, latitude band and date, std,
autocorrelation at every lag ``1..K-1``, zonal spectrum, cross-channel correlation; each in
units of its standard error, at a stated family-wise false-fail rate
(:mod:`priorflow.evaluation.learned`, :mod:`priorflow.evaluation.blanket_stats`).

**What does composition do?** (``check.composition``: ``warn``, ``fail`` or ``off``): with the
learned blankets, the run's composed trajectories against them in units of standard errors
(seams, autocorrelation within and beyond the blanket, variance along the trajectory;
:mod:`priorflow.evaluation.composition`, groups ``composition-<size>``); and, always, against
archive trajectories (climatology members) with the fixed thresholds below, not standard
errors. A failure here is a warning unless the config says ``fail``. ``finite`` always gates.
With ``check.learned: false`` this verdict gates, as before the learned one existed.

========== ===================================================================================
criterion  what is compared (per size, every channel)
========== ===================================================================================
finite     every member holds finite values
bias       mean of ``x - clim_mean`` over dates, members, leads and points, in units of the
           climatological standard deviation: ``|bias| <= max_bias``
spread     standard deviation over the climatological one within ``[min_std_ratio,
           max_std_ratio]``; spread-skill ratio (pooled over leads, finite-ensemble factor)
           within ``[min_ssr, max_ssr]`` (needs 2 members)
skill      fair CRPS of the prior over that of the climatology ensemble (same size, same
           dates): ``<= max_crps_ratio``
autocorr.  ``|acf_prior - acf_archive| <= max_acf_error`` at lags ``1..acf_lags``, the archive's
           from climatology members (real archive trajectories, same estimator)
seams      mean squared one-step increment across blanket seams over the one inside blankets:
           ``<= max_seam_index`` (1 without seams)
spectrum   RMS of log2 of the ratio of the normalised zonal spectra: ``<= max_spectrum_error``
diurnal    amplitude of the fitted daily harmonic over the climatology's within
           ``[min_diurnal_ratio, max_diurnal_ratio]``, phase error ``<= max_diurnal_phase_hours``
           (channels with a reference amplitude under 10% of their std are not judged)
========== ===================================================================================

Known limits of blanket composition (measured with the exact synthetic-world denoiser,
``K = 8``, ``O = 4``, 64 lms steps): the standard deviation in the middle of a trajectory is
about 6-7% low, the seam index is about 1.15-1.2, and the lag correlation beyond the blanket
decays faster than the world's (lag 6: 0.23 for 0.53; lag 12: 0.00 for 0.28). This is why the
composed run does not gate by default: a check on composed trajectories cannot tell a model that
learned the wrong temporal correlation from a right model composed over blankets. Against the
model's own blankets it can: the composition tests name these effects in standard errors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.config import CheckConfig
from priorflow.data.archive import open_archive
from priorflow.errors import ArchiveError, CheckError, ConfigError, StoreError
from priorflow.evaluation.check_folders import new_check, prepare_root
from priorflow.evaluation.composition_check import (
    CompositionResult,
    check_composition,
    composition_dataset,
)
from priorflow.evaluation.evaluate import NonFiniteRun, evaluate_group
from priorflow.evaluation.learned import LearnedResult, check_blankets, judged_dataset
from priorflow.evaluation.ranks import extreme_fraction
from priorflow.evaluation.report import render_report
from priorflow.evaluation.verdict import Finding, judge, key_numbers
from priorflow.models.appa import card_standardizes
from priorflow.plan import card_archive_path
from priorflow.safe_yaml import load_yaml
from priorflow.store import has_store, open_group, read_store_attrs, store_path
from priorflow.store.integrity import refuse_damage, verify_run

METRICS_NAME = "metrics.zarr"
REPORT_NAME = "report.md"


def load_check_config(
    run_dir: str | os.PathLike[str], overrides: Iterable[str] = ()
) -> CheckConfig:
    """The run's ``check:`` section (from ``<run_dir>/config.yaml``) with ``check.key=value``
    overrides applied (YAML values). A missing config file means the defaults.

    Raises:
        ConfigError: an override that is not ``check.<key>=<value>``, or a bad value.
    """
    import yaml

    data: dict[str, Any] = {}
    path = Path(run_dir) / "config.yaml"
    if path.exists():
        loaded = load_yaml(path.read_text()) or {}
        section = loaded.get("check") if isinstance(loaded, dict) else None
        data = dict(section or {})
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or parts[0] != "check" or not parts[1]:
            raise ConfigError(
                f"--set {item!r}: not check.<key>=<value> — e.g. --set check.max_bias=0.3"
            )
        try:
            data[parts[1]] = load_yaml(text) if text.strip() else None
        except (yaml.YAMLError, ValueError):
            raise ConfigError(f"--set {key}: {text!r} is not a YAML value") from None
    return CheckConfig.parse(data)


@dataclass
class CheckResult:
    """What :func:`run_check` returns: small and JSON-able through :meth:`to_dict`.

    Attributes:
        passed: the verdict (the gate: learned, and composition when it fails the run).
        reasons: one line per failed criterion that gates (empty when it passed).
        findings: every judged criterion (:class:`Finding`), learned ones first.
        numbers: key numbers per size (:func:`key_numbers`).
        run_dir: the run; directory: this check's folder (``<run_dir>/check/<UTC time>``);
        metrics, report: its ``metrics.zarr`` and ``report.md``; plots: its PNG files.
        seconds: how long the check took.
        warnings: one line per failed composition criterion that does not gate.
        verdicts: ``learned`` (pass, fail, off) and ``composition`` (pass, warn, fail, off).
        learned: what the learned verdict sampled and judged (blanket size, dates, members,
            archive windows, sampler, steps, tests, false-fail rate, lags).
    """

    passed: bool
    reasons: list[str]
    findings: list[Finding]
    numbers: dict[str, Any]
    run_dir: Path
    directory: Path
    metrics: Path
    report: Path
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)
    learned: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"pass"`` or ``"fail"``."""
        return "pass" if self.passed else "fail"

    def raise_for_verdict(self) -> None:
        """Raise :class:`CheckError` (the reasons, one per line) when the check failed: what a
        flow calls so that the run ends Failed."""
        if not self.passed:
            raise CheckError(
                f"prior check failed ({len(self.reasons)} reasons; report {self.report}):\n"
                + "\n".join(self.reasons)
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (paths as strings)."""
        return {
            "verdict": self.verdict,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "findings": [asdict(f) for f in self.findings],
            "numbers": self.numbers,
            "run_dir": str(self.run_dir),
            "directory": str(self.directory),
            "metrics": str(self.metrics),
            "report": str(self.report),
            "plots": [str(p) for p in self.plots],
            "seconds": self.seconds,
            "warnings": list(self.warnings),
            "verdicts": dict(self.verdicts),
            "learned": self.learned,
        }


def resolve_archive(run_dir: Path, attrs: dict[str, Any]) -> str:
    """The run's archive: ``archive`` of ``config.yaml``, else the model card's (relative to the
    model directory). :class:`ArchiveError` when neither names one."""

    path = run_dir / "config.yaml"
    if path.exists():
        loaded = load_yaml(path.read_text()) or {}
        if isinstance(loaded, dict) and loaded.get("archive"):
            return str(loaded["archive"])
    card_archive = card_archive_path(
        str(attrs.get("model_path", ".")), (attrs.get("card") or {}).get("archive")
    )
    if card_archive:
        return card_archive
    raise ArchiveError(
        f"archive: the run {run_dir} names no archive (config.yaml nor the model card); "
        "give one with --archive PATH"
    )


def run_check(
    run_dir: str | os.PathLike[str],
    thresholds: CheckConfig | dict[str, Any] | None = None,
    archive: Any = None,
    *,
    model: Any = None,
    progress: Callable[[str], None] | None = None,
) -> CheckResult:
    """Check a finished run against its archive; write metrics, plots and a report in the run.

    Arguments:
        run_dir: ``<output_dir>/<run_id>`` holding ``prior.zarr`` (every size aggregated).
        thresholds: a :class:`CheckConfig`, a ``check:`` mapping, or None for the run's own
            ``check:`` section in ``config.yaml`` (defaults where it has none).
        archive: an opened :class:`~priorflow.data.archive.LatentArchive`, a path, or None for the
            run's archive (``config.yaml``, else the model card's).
        model: the model whose blankets the learned verdict samples: a loaded model, a model
            directory, or None for the run's (its checkpoint must be the one the run used).
        progress: called with a short line as each size is evaluated.

    Returns:
        The :class:`CheckResult`; ``<run_dir>/check/<UTC time>/`` then holds ``metrics.zarr``,
        ``report.md`` and the PNGs, and ``<run_dir>/check/latest`` points at it (earlier
        checks are kept).

    Raises:
        StoreError: no store, a size that is not finished (not aggregated), members whose
            data does not match their done marks (named), or a ``check`` or ``check/latest``
            that priorflow did not write.
        ArchiveError: no archive, or one that does not hold the run's valid times.
        ConfigError: bad thresholds.
    """
    began, began_at = time.perf_counter(), datetime.now(UTC)
    run_dir = Path(run_dir)
    store = store_path(run_dir)
    if not has_store(run_dir):
        raise StoreError(f"run: {run_dir} holds no {store.name}; give the directory of a run")
    prepare_root(run_dir)  # refused before the work, not after
    config = load_check_config(run_dir) if thresholds is None else CheckConfig.parse(thresholds)
    attrs = read_store_attrs(store)
    if not hasattr(archive, "states"):
        archive = open_archive(
            archive if archive is not None else resolve_archive(run_dir, attrs),
            standardize=card_standardizes((attrs.get("card") or {}).get("metadata") or {}),
        )
    groups = list(attrs["priorflow_schema"]["groups"])
    _, problems = verify_run(run_dir)  # the data is what the members wrote, or no verdict
    refuse_damage(problems, f"run {run_dir}")
    results, composed = _evaluate_sizes(run_dir, groups, archive, config, progress)
    learned = None
    if config.learned:
        starts = [
            np.datetime64(t, "s").astype(datetime)
            for t in open_group(run_dir, groups[0])["start_date"].values
        ]
        learned = check_blankets(attrs, starts, archive, config, model, progress)
    composition: list[CompositionResult] = []
    if learned is not None and learned.samples is not None and config.composition != "off":
        composition = check_composition(
            run_dir, list(results), learned.samples, archive, config,
            seed=int(attrs.get("seed") or 0), progress=progress,
        )  # fmt: skip
        composed += [f for c in composition for f in c.findings]
    verdicts, findings, reasons, warned = _verdicts(learned, composed, config)
    numbers = {group: key_numbers(metrics) for group, metrics in results.items()}
    passed = not reasons

    with new_check(run_dir, began_at) as new:
        tmp = new.staging
        plots: list[Path] = []
        if config.plots:
            plots = _plot(results, learned, tmp, config.dpi)
        verdict = {
            "verdict": "pass" if passed else "fail",
            "verdicts": verdicts,
            "reasons": reasons,
            "warnings": warned,
            "learned": learned.description if learned else {},
            "composition": {c.group: c.description for c in composition},
            "check_config": config.model_dump(),
            "numbers": numbers,
            "run_dir": str(run_dir),
            "archive": str(getattr(archive, "path", "")),
            "began": began_at.isoformat(timespec="seconds"),
        }
        tables = dict(results)
        if learned is not None:
            tables["blankets"] = _learned_dataset(learned)
        tables |= {c.group: composition_dataset(c) for c in composition}
        _write_metrics(tmp / METRICS_NAME, tables, verdict)
        seconds = time.perf_counter() - began
        report = render_report(
            run_dir,
            passed,
            findings,
            numbers,
            results,
            plots,
            config,
            verdicts=verdicts,
            learned=learned,
            began=began_at,
            composition=composition,
        )
        (tmp / REPORT_NAME).write_text(report)
    final = new.path
    assert final is not None  # the block ended without an error
    return CheckResult(
        passed=passed,
        reasons=reasons,
        findings=findings,
        numbers=numbers,
        run_dir=run_dir,
        directory=final,
        metrics=final / METRICS_NAME,
        report=final / REPORT_NAME,
        plots=[final / p.name for p in plots],
        seconds=seconds,
        warnings=warned,
        verdicts=verdicts,
        learned=learned.description if learned else {},
    )


def _plot(
    results: dict[str, Any], learned: LearnedResult | None, directory: Path, dpi: int
) -> list[Path]:
    """Every PNG: per size (:func:`~priorflow.evaluation.plots.plot_group`), and the rank
    histograms of the learned verdict."""
    from priorflow.evaluation.plots import plot_group, plot_ranks

    plots: list[Path] = []
    for metrics in results.values():
        plots += plot_group(metrics, directory, dpi=dpi)
    if learned is not None and learned.ranks is not None:
        channels = [str(c) for c in range(len(learned.ranks))]
        path = directory / f"{learned.group}-ranks.png"
        plots.append(plot_ranks(learned.ranks, channels, learned.group, path, dpi))
    return plots


def _verdicts(
    learned: LearnedResult | None, composed: list[Finding], config: CheckConfig
) -> tuple[dict[str, str], list[Finding], list[str], list[str]]:
    """The two verdicts, every finding shown, the reasons that gate and the warnings.

    ``finite`` always gates. With the learned verdict, composition gates only when
    ``check.composition`` is ``fail``, warns when ``warn`` and is left out when ``off``; without
    it (``check.learned: false``), composition gates unless ``off``.
    """
    finite = [f for f in composed if f.criterion == "finite"]
    others = [f for f in composed if f.criterion != "finite"]
    mode = config.composition
    if learned is None and mode == "warn":
        mode = "fail"
    if mode == "off":
        others = []
    failed = [f for f in others if not f.ok]
    if not others:
        composition = "off" if mode == "off" else "pass"
    else:
        composition = "pass" if not failed else ("fail" if mode == "fail" else "warn")
    gating = finite + (others if mode == "fail" else [])
    if learned is not None:
        gating = learned.findings + gating
    reasons = [f.message for f in gating if not f.ok]
    warned = [f.message for f in failed] if mode == "warn" else []
    verdicts = {
        "learned": "off" if learned is None else ("pass" if learned.passed else "fail"),
        "composition": composition,
    }
    findings = (learned.findings if learned is not None else []) + finite + others
    return verdicts, findings, reasons, warned


def _learned_dataset(learned: LearnedResult) -> Any:
    """Every judged test of the learned verdict as a dataset along ``test``; the rank
    histograms ``(channel, rank)`` (fractions) and their extreme-bin fractions beside them."""
    ds = judged_dataset(learned.judged, ("model", "archive"))
    ds.attrs = {k: v for k, v in learned.description.items() if k != "sampler_config"}
    ds.attrs["group"] = learned.group
    if learned.ranks is not None:
        C, bins = learned.ranks.shape
        ds["rank_histogram"] = (("channel", "rank"), learned.ranks)
        ds["rank_extreme_fraction"] = (("channel",), extreme_fraction(learned.ranks))
        ds = ds.assign_coords(channel=np.arange(C), rank=np.arange(bins))
        ds.attrs["rank_extreme_expected"] = 2 / bins
    return ds


def _evaluate_sizes(
    run_dir: Path,
    groups: list[str],
    archive: Any,
    config: CheckConfig,
    progress: Callable[[str], None] | None,
) -> tuple[dict[str, Any], list[Finding]]:
    """The metrics of every finished size and the findings of all of them, size by size."""
    say = progress or (lambda line: None)
    results: dict[str, Any] = {}
    findings: list[Finding] = []
    for group in groups:
        dataset = open_group(run_dir, group)
        if not dataset.attrs.get("aggregated"):
            raise StoreError(
                f"{group}: the run {run_dir} is not finished (this size is not aggregated); "
                "run it again with the same run_id to finish it, then check it"
            )
        say(
            f"{group}: evaluating {dataset.sizes['start_date']} dates x "
            f"{dataset.sizes['member']} members"
        )
        try:
            results[group] = evaluate_group(
                dataset,
                archive,
                window_days=config.window_days,
                max_lag=config.max_lag,
                plot_channels=config.plot_channels,
            )
        except NonFiniteRun as error:
            shown = ", ".join(error.members[:3])
            findings.append(
                Finding(
                    group,
                    "finite",
                    False,
                    float(len(error.members)),
                    "0 members",
                    f"{group} finite: all {len(error.members)} members hold NaN or inf"
                    f" ({shown}); nothing else could be measured (the model diverged)",
                )
            )
            continue
        findings += judge(results[group], config)
    return results, findings


def _write_metrics(path: Path, results: dict[str, Any], verdict: dict[str, Any]) -> None:
    """``metrics.zarr``: one group per size, the verdict in the root attributes."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.open_group(str(path), mode="w", zarr_format=3)
        for group, metrics in results.items():
            ds = metrics.copy()
            ds.attrs = {k: _attr(v) for k, v in ds.attrs.items()}
            ds.to_zarr(str(path), group=group, mode="w", zarr_format=3, consolidated=False)
        root = zarr.open_group(str(path), mode="r+")
        root.attrs.update(verdict)
        zarr.consolidate_metadata(str(path))


def _attr(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_attr(v) for v in value]
    return value
