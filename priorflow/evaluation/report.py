"""The prior check's report: markdown with the plots embedded, and the command line's summary."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from priorflow.config import CheckConfig
from priorflow.evaluation.learned import criterion_tests
from priorflow.evaluation.verdict import Finding

if TYPE_CHECKING:
    from priorflow.evaluation.check import CheckResult


def fmt(value: float | None) -> str:
    """A number in 3 significant digits, ``-`` when missing or not finite."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.3g}"


def _cell(value: Any) -> str:
    """A markdown table cell: pipes inside the text (e.g. ``|.| <= 0.2``) escaped."""
    return str(value).replace("|", "\\|")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_report(
    run_dir: Path,
    passed: bool,
    findings: list[Finding],
    numbers: dict[str, Any],
    results: dict[str, Any],
    plots: list[Path],
    config: CheckConfig,
    *,
    verdicts: dict[str, str] | None = None,
    learned: Any = None,
    began: datetime | None = None,
    composition: list[Any] | None = None,
) -> str:
    """The markdown report: both verdicts, reasons and warnings, every threshold, lag and seam,
    a table per criterion, every learned test, the rank histograms, key numbers, the plots as
    base64 data URIs (so a Prefect markdown artifact shows them)."""
    verdicts = verdicts or {}
    when = f" Checked {began:%Y-%m-%d %H:%M:%S} UTC." if began is not None else ""
    lines = [
        f"# Prior check: **{'PASS' if passed else 'FAIL'}**",
        "",
        f"Run `{run_dir}`.{when} Did the denoiser learn? **{verdicts.get('learned', 'off')}** "
        f"(gates). What does composition do? **{verdicts.get('composition', 'off')}** "
        f"(check.composition: {config.composition}).",
        "",
    ]
    reasons = [f.message for f in findings if not f.ok]
    if reasons:
        lines += ["## Failed criteria", "", *[f"- {r}" for r in reasons], ""]
    if learned is not None:
        lines += _learned_section(learned, config)
        lines += _ranks_section(learned)
        lines += _embedded(plots, learned.group)
    if composition:
        lines += _composition_section(composition, config)
    lines += [
        "## Composed trajectories",
        "",
        "Thresholds `check:` "
        + ", ".join(f"{k}={v}" for k, v in _fixed_thresholds(config).items())
        + f"; autocorrelation judged at lags 1-{config.acf_lags} (measured to "
        f"{config.max_lag}).",
        "",
    ]
    lines += [
        "## Verdict",
        "",
        "| size | criterion | worst value | allowed | status |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        status = "pass" if f.ok else "**FAIL**"
        cells = (f.group, f.criterion, fmt(f.value), f.limit, status)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines.append("")
    lines += settings_section(config, learned, results)
    for group, n in numbers.items():
        ds = results[group]
        lines += [
            f"## {group}: {ds.attrs['dates']} dates x {ds.attrs['members']} members, "
            f"{n['states']} states",
            "",
            "| source | RMSE | RMSE first step | RMSE last lead | spread | SSR | CRPS | fair CRPS |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for source in ("prior", "climatology", "persistence"):
            s = n[source]
            lines.append(
                f"| {source} | {fmt(s['rmse'])} | {fmt(s['rmse_first'])} "
                f"| {fmt(s['rmse_last'])} | {fmt(s['spread'])} "
                f"| {fmt(s['ssr'])} "
                f"| {fmt(s['crps'])} | {fmt(s['fair_crps'])} |"
            )
        lines += [
            "",
            "| sample | max bias / std | std ratio | lag-1 acf | acf at lag "
            f"{n['max_lag']} | seam index | spectrum error | diurnal ratio | diurnal phase (h) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for sample in ("prior", "archive"):
            s = n[f"{sample}_sample"]

            def v(key: str, s: dict[str, Any] = s) -> str:
                value = s.get(key)
                return "-" if value is None else fmt(value)

            lines.append(
                f"| {sample} | {v('bias')} | {v('std_ratio')} | {v('lag1')} | {v('lag_last')} "
                f"| {v('seam_index')} | {v('spectrum_error')} | {v('diurnal_ratio')} "
                f"| {v('diurnal_phase_hours')} |"
            )
        seams = ds.attrs.get("seam_leads", [])
        lines += [
            "",
            f"Blankets K={ds.attrs['blanket_size']}, overlap {ds.attrs['overlap']}, fold "
            f"{ds.attrs['fold_mode']}; seams at leads {', '.join(map(str, seams)) or 'none'} h. "
            "The archive sample is climatology members (archive trajectories at the same hours "
            "of other days/years) measured the same way: the level a perfect prior reaches "
            "with this many dates and members.",
            "",
        ]
        lines += _embedded(plots, group)
    return "\n".join(lines)


def _embedded(plots: list[Path], group: str) -> list[str]:
    """The plots of ``group`` (``<group>-<title>.png``) as markdown images with data URIs."""
    lines = []
    for plot in plots:
        if plot.name.startswith(f"{group}-"):
            title = plot.stem.removeprefix(f"{group}-")
            lines += [f"![{group} {title}]({_data_uri(plot)})", ""]
    return lines


def settings_section(config: CheckConfig, learned: Any, results: dict[str, Any]) -> list[str]:
    """Every threshold, lag and seam the check used, as one table."""
    rows: list[tuple[str, str, str]] = []
    if learned is not None:
        d = learned.description
        K = int(d["blanket_size"])
        rows += [
            ("learned", "false-fail rate α (all tests together)", f"{config.false_fail_rate:g}"),
            ("learned", "tests m (Bonferroni: each two-sided at α/m)", str(d["tests"])),
        ]
        for criterion, values in _thresholds(learned.judged).items():
            tolerance = config.tolerance_of(criterion)
            shown = ", ".join(f"{t:.2f} (ν = {df:g})" for t, df in values)
            what = f"{criterion}: allowed abs(z) = t_ν⁻¹(1 - α/2m) x tolerance {tolerance:g}"
            rows.append(("learned", what, shown))
        rows += [
            ("learned", "autocorrelation lags (states)", f"1-{K - 1}"),
            ("learned", "blanket length K; seams", f"{K}; none (one blanket, no composition)"),
            ("learned", "archive windows within (days)", f"{config.blanket_window_days:g}"),
            ("learned", "bootstrap resamples", str(config.bootstrap_resamples)),
        ]
    fields = type(config).model_fields
    rows += [
        ("composed", f"`check.{key}`: {fields[key].description}", f"{value:g}")
        for key, value in _fixed_thresholds(config).items()
    ]
    rows += [
        ("composed", "autocorrelation lags judged (states)", f"1-{config.acf_lags}"),
        ("composed", "autocorrelation lags measured (states)", f"1-{config.max_lag}"),
        ("composed", "climatology window (days)", f"{config.window_days:g}"),
        ("composed", "verdict", f"check.composition: {config.composition}"),
    ]
    for group, ds in results.items():
        seams = ", ".join(map(str, ds.attrs.get("seams", [])))
        leads = ", ".join(map(str, ds.attrs.get("seam_leads", [])))
        rows.append(
            (
                f"composed {group}",
                "blanket length K, overlap, fold; seams",
                f"{ds.attrs['blanket_size']}, {ds.attrs['overlap']}, {ds.attrs['fold_mode']}; "
                + (f"states {seams} (leads {leads} h)" if seams else "none (one blanket)"),
            )
        )
    lines = [
        "## Every threshold, lag and seam",
        "",
        "| verdict | setting | value |",
        "|---|---|---|",
    ]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _fixed_thresholds(config: CheckConfig) -> dict[str, float]:
    """The composed verdict's fixed thresholds: every ``max_*`` and ``min_*`` setting but
    ``max_lag`` (how far the autocorrelation is measured, not a threshold)."""
    return {
        k: v
        for k, v in config.model_dump().items()
        if k.startswith(("max_", "min_")) and k != "max_lag"
    }


def _thresholds(judged: list[Any]) -> dict[str, list[tuple[float, float]]]:
    """Per learned criterion, its distinct ``(|z| threshold, degrees of freedom)``."""
    out: dict[str, list[tuple[float, float]]] = {}
    for j in judged:
        pair = (round(float(j.threshold), 2), float(j.test.df))
        if pair not in out.setdefault(j.test.criterion, []):
            out[j.test.criterion].append(pair)
    return out


def _ranks_section(learned: Any) -> list[str]:
    """The rank histograms' extreme bins per channel against their expectation (no gate)."""
    if learned.ranks is None:
        return []
    histogram = learned.ranks
    bins = histogram.shape[1]
    expected = 2 / bins
    lines = [
        "### Rank histograms (a diagnostic, not a gate)",
        "",
        f"The rank of every archive window's value (moved to the model's valid time by removing "
        f"the fitted seasonal drift, y - b1 delta) among the {bins - 1} blankets' values at the "
        "same date, state, channel and point. A flat histogram (each rank 1/(M+1)) is what a "
        "model of the archive's distribution gives; a U shape (the two extreme bins above "
        f"2/(M+1) = {expected:.3f}) an under-dispersed one, a dome an over-dispersed one, a "
        "slope a biased one. Not a gate: every window of a date is ranked among the same "
        "members, so the standard error of the extreme-bin fraction is not that of independent "
        "ranks nor a simple bootstrap's; the std and mean tests above judge dispersion and bias "
        "in units of their standard errors.",
        "",
        "| channel | extreme bins h(0) + h(M) | expected 2/(M+1) | ratio |",
        "|---|---|---|---|",
    ]
    for c, value in enumerate(histogram[:, 0] + histogram[:, -1]):
        lines.append(f"| {c} | {value:.4f} | {expected:.4f} | {value / expected:.2f} |")
    return [*lines, ""]


def _learned_section(learned: Any, config: CheckConfig) -> list[str]:
    """The learned verdict: what was sampled, the rule, the worst test per criterion, all tests."""
    d = learned.description
    windows = d["archive_windows"]
    lines = [
        "## Did the denoiser learn? The model's own blankets against the archive",
        "",
        f"{d['members']} blankets of K = {d['blanket_size']} states per start date "
        f"({d['dates']} dates; sampler {d['sampler']} {d['sampler_config']}, {d['steps']} "
        f"steps; no composition) against {sum(windows)} archive windows of K states at the "
        f"same hours within {config.blanket_window_days:g} days of each date "
        f"({', '.join(map(str, windows))} per date). Autocorrelation at lags "
        f"{d['lags'][0]}-{d['lags'][-1]}. Each test fails when |z| = |model - archive| / SE "
        f"exceeds t⁻¹(1 - α/2m) x tolerance, α = {config.false_fail_rate:g} (the false-fail "
        f"rate of a right model over all m = {d['tests']} tests), tolerances "
        f"{config.tolerance or 'all 1'}; SE from {config.bootstrap_resamples} stratified "
        "bootstrap resamples (mean: least squares, see the docs).",
        "",
        "| criterion | worst test | model | archive | SE | z | allowed abs(z) | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for finding in learned.findings:
        own, worst = criterion_tests(learned.judged, finding.criterion)
        t = worst.test
        failed = sum(not j.ok for j in own)
        lines.append(
            f"| {finding.criterion} | {t.label} | {t.model:.4g} | {t.archive:.4g} | "
            f"{t.se:.2g} | {t.z:+.2f} | {worst.threshold:.2f} | {failed}/{len(own)} |"
        )
    lines += [
        "",
        "<details><summary>every test</summary>",
        "",
        "| criterion | test | model | archive | SE | z | allowed abs(z) |",
        "|---|---|---|---|---|---|---|",
    ]
    for j in learned.judged:
        t = j.test
        mark = "" if j.ok else " **FAIL**"
        lines.append(
            f"| {t.criterion} | {t.label} | {t.model:.4g} | {t.archive:.4g} | {t.se:.2g} | "
            f"{t.z:+.2f}{mark} | {j.threshold:.2f} |"
        )
    return [*lines, "", "</details>", ""]


def _composition_section(results: list[Any], config: CheckConfig) -> list[str]:
    """What composition does, in standard errors: per size, the worst test per criterion and
    every test."""
    lines = [
        "## What does composition do? Composed trajectories against the model's own blankets",
        "",
        "Each size's members against the model's blankets (above) and, for the autocorrelation, "
        "the archive's windows of the trajectory's length at the same hours: seams (increment "
        "across seams over the one inside, and against the blankets'), autocorrelation at every "
        "lag, variance over the trajectory and each blanket's states. Each test fails when "
        f"|z| exceeds t⁻¹(1 - α/2m) x tolerance, α = {config.false_fail_rate:g} over all m = "
        f"{results[0].description['run_tests']} composition tests, tolerances "
        f"{config.composition_tolerance or 'all 1'}; SE from {config.bootstrap_resamples} "
        f"stratified bootstrap resamples; check.composition: {config.composition}.",
        "",
    ]
    for result in results:
        d = result.description
        lines += [
            f"### {result.group}: {d['dates']} dates x {d['members']} members of {d['states']} "
            f"states, {d['blankets']} blankets per date, "
            f"{sum(d['archive_windows'])} archive windows",
            "",
            f"K = {d['blanket_size']}, overlap {d['overlap']}, fold {d['fold_mode']}; seams at "
            f"states {', '.join(map(str, d['seams']))}; lags {d['lags'][0]}-{d['lags'][-1]}.",
            "",
            "| criterion | worst test | against | composed | reference | SE | z "
            "| allowed abs(z) | failed |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for finding in result.findings:
            own, worst = criterion_tests(result.judged, finding.criterion)
            t = worst.test
            lines.append(
                f"| {finding.criterion} | {t.label} | {t.against} | {t.composed:.4g} | "
                f"{t.reference:.4g} | {t.se:.2g} | {t.z:+.2f} | {worst.threshold:.2f} | "
                f"{sum(not j.ok for j in own)}/{len(own)} |"
            )
        lines += [
            "",
            "<details><summary>every test</summary>",
            "",
            "| criterion | test | against | composed | reference | SE | z | allowed abs(z) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for j in result.judged:
            t = j.test
            mark = "" if j.ok else " **FAIL**"
            lines.append(
                f"| {t.criterion} | {t.label} | {t.against} | {t.composed:.4g} | "
                f"{t.reference:.4g} | {t.se:.2g} | {t.z:+.2f}{mark} | {j.threshold:.2f} |"
            )
        lines += ["", "</details>", ""]
    return lines


def format_result(result: CheckResult) -> str:
    """Plain-text summary for the command line: verdict, reasons, key numbers per size."""
    lines = [f"prior check: {result.verdict.upper()}  ({result.run_dir})"]
    if result.verdicts:
        lines.append(
            f"  did the denoiser learn: {result.verdicts.get('learned')}; composition: "
            f"{result.verdicts.get('composition')}"
        )
    if result.learned:
        d = result.learned
        lines.append(
            f"  learned: {d['members']} blankets x {d['dates']} dates against "
            f"{sum(d['archive_windows'])} archive windows, {d['tests']} tests at false-fail "
            f"rate {d['false_fail_rate']:g}, lags {d['lags'][0]}-{d['lags'][-1]}"
        )
    lines += [f"  {reason}" for reason in result.reasons]
    lines += [f"  warning: {warning}" for warning in result.warnings]
    for group, n in result.numbers.items():
        lines.append(f"{group} ({n['states']} states)")
        lines.append("  source        RMSE  spread   SSR   fair CRPS")
        for source in ("prior", "climatology", "persistence"):
            s = n[source]
            lines.append(
                f"  {source:<12} {fmt(s['rmse']):>5}  {fmt(s['spread']):>6}"
                f"  {fmt(s['ssr']):>5}"
                f"  {fmt(s['fair_crps']):>9}"
            )
        for sample in ("prior", "archive"):
            s = n[f"{sample}_sample"]
            lines.append(
                f"  {sample:<8} bias {fmt(s['bias'])}  std ratio "
                f"{fmt(s['std_ratio'])}  lag-1 acf {fmt(s['lag1'])}"
                f"  seam index {fmt(s['seam_index'])}"
                f"  spectrum {fmt(s.get('spectrum_error'))}"
            )
    lines.append(f"check    {result.directory} (latest: {result.run_dir / 'check' / 'latest'})")
    lines.append(f"report   {result.report}")
    lines.append(f"metrics  {result.metrics}")
    return "\n".join(lines)
