r"""The prior check of a finished run: metrics, a pass/fail verdict with reasons, plots, a report.

:func:`run_check` evaluates every trajectory size of ``<run_dir>/prior.zarr`` against the latent
archive (:mod:`priorflow.evaluation.evaluate`), judges the metrics with the thresholds of
:class:`CheckConfig` (the run config's ``check:`` section) and writes, atomically, ::

    <run_dir>/check/metrics.zarr      one group per size (the metrics dataset), verdict in attrs
    <run_dir>/check/report.md         verdict table, key numbers, the plots as data URIs
    <run_dir>/check/<size>-*.png      plumes, autocorrelation/seams, skill/spread, spectra

and returns a small :class:`CheckResult` (what a Prefect task returns). The verdict fails when
any criterion fails; each reason is one line naming the criterion, the size, the channel and
the numbers:

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
decays faster than the world's (lag 6: 0.23 for 0.53; lag 12: 0.00 for 0.28). The defaults judge
autocorrelation at lags 1-2 only and leave room for these; the metrics store keeps every lag.

Calibration (worst channel; demo settings: 3 dates x 2 members x 72 states, 32 lms steps):

=================== ====== ====== ===== ====== ======= ===== ========= ======== =======
model               bias   std    SSR   CRPS   acf(2)  seams spectrum  diurnal  verdict
=================== ====== ====== ===== ====== ======= ===== ========= ======== =======
exact (64 steps)*   0.03   0.93   0.94  0.99   -0.07   1.20  0.11      0.93     pass
reference           0.05   0.92   0.94  0.98   -0.14   1.18  0.49      1.26     pass
reference x1.5      2.2    2.95   0.69  2.70   -0.87   1.07  1.69      6.6      fail
reference shuffled  1.8    2.01   0.70  1.68   -0.80   1.03  2.85      0.00     fail
defaults            0.25   0.8-1.2 0.7-1.3 1.25 ±0.2   1.5   0.75      0.5-1.6
=================== ====== ====== ===== ====== ======= ===== ========= ======== =======

(* 4 dates x 4 members x 48 states; CRPS is the fair CRPS over the climatology ensemble's.)
"""

from __future__ import annotations

import base64
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from priorflow.atomic import move_into_place
from priorflow.errors import ArchiveError, ConfigError, PriorflowError

__all__ = [
    "CHECK_DIR",
    "METRICS_NAME",
    "REPORT_NAME",
    "CheckConfig",
    "CheckError",
    "CheckResult",
    "Finding",
    "judge",
    "load_check_config",
    "run_check",
]

CHECK_DIR = "check"
METRICS_NAME = "metrics.zarr"
REPORT_NAME = "report.md"


class CheckConfig(BaseModel):
    """The ``check:`` section of a run config: what the prior check measures and its thresholds.

    The defaults pass the shipped reference model and the exact synthetic-world denoiser and
    fail a broken model (scaled or shuffled weights); see the module docstring.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="run the check after generation (flows)")
    window_days: float = Field(
        default=15, gt=0, le=183, description="climatology: days either side of the day of year"
    )
    max_lag: int = Field(default=12, ge=1, description="largest lag measured (states)")
    acf_lags: int = Field(default=2, ge=1, description="lags 1..acf_lags are judged")
    max_bias: float = Field(default=0.25, gt=0, description="|mean bias| / climatological std")
    min_std_ratio: float = Field(default=0.8, gt=0, description="std / climatological std, low")
    max_std_ratio: float = Field(default=1.2, gt=0, description="std / climatological std, high")
    min_ssr: float = Field(default=0.7, gt=0, description="spread-skill ratio, low")
    max_ssr: float = Field(default=1.3, gt=0, description="spread-skill ratio, high")
    max_crps_ratio: float = Field(
        default=1.25, gt=0, description="fair CRPS of the prior / of climatology"
    )
    max_acf_error: float = Field(default=0.2, gt=0, description="|acf - archive acf|")
    max_seam_index: float = Field(default=1.5, gt=0, description="seam discontinuity index")
    max_spectrum_error: float = Field(
        default=0.75, gt=0, description="RMS log2 ratio of normalised zonal spectra"
    )
    min_diurnal_ratio: float = Field(default=0.5, ge=0, description="diurnal amplitude, low")
    max_diurnal_ratio: float = Field(default=1.6, gt=0, description="diurnal amplitude, high")
    max_diurnal_phase_hours: float = Field(
        default=3.0, gt=0, le=12, description="|diurnal phase error| in hours"
    )
    plots: bool = Field(default=True, description="write the PNG plots (and embed them)")
    plot_channels: int = Field(default=2, ge=1, description="channels in the plume plot")
    dpi: int = Field(default=80, ge=20, le=300, description="resolution of the PNGs")

    @model_validator(mode="after")
    def _ranges(self) -> CheckConfig:
        for low, high in (
            ("min_std_ratio", "max_std_ratio"),
            ("min_ssr", "max_ssr"),
            ("min_diurnal_ratio", "max_diurnal_ratio"),
        ):
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(
                    f"check.{low}: {getattr(self, low)} must be smaller than check.{high} "
                    f"({getattr(self, high)})"
                )
        return self

    @classmethod
    def parse(cls, data: dict[str, Any] | CheckConfig | None) -> CheckConfig:
        """Validate a ``check:`` mapping; :class:`ConfigError` (one line, ``check.<key>``)."""
        if isinstance(data, CheckConfig):
            return data
        if data is None:
            data = {}
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if not isinstance(data, dict):
            raise ConfigError(f"check: {data!r} — a mapping of check settings (key: value)")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(_one_line(error)) from None


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in ("check", *first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        return f"{key}: unknown key — check takes {', '.join(CheckConfig.model_fields)}"
    message = str(first.get("msg", "")).removeprefix("Value error, ")
    if message.startswith("check."):
        return message
    return f"{key}: {first.get('input')!r} — {message.lower()}"


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
        loaded = yaml.safe_load(path.read_text()) or {}
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
            data[parts[1]] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: {text!r} is not a YAML value") from None
    return CheckConfig.parse(data)


# --------------------------------------------------------------------------------------------
# the verdict


@dataclass(frozen=True)
class Finding:
    """One judged criterion of one size: ``ok``, the worst value, the allowed range, a message."""

    group: str
    criterion: str
    ok: bool
    value: float
    limit: str
    message: str


def _fmt(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.3g}"


def _channel_label(metrics: Any, index: int) -> str:
    return str(metrics["channel"].values[index])


def judge(metrics: Any, config: CheckConfig) -> list[Finding]:
    """Judge one size's metrics (:func:`priorflow.evaluation.evaluate.evaluate_group`) against ``config``.

    Returns one :class:`Finding` per criterion that could be measured (spread-skill needs two
    members, seams more than one blanket, spectra a spatial dimension); the failed ones carry
    the reason as their message.
    """
    group = str(metrics.attrs["group"])
    out: list[Finding] = []

    def add(criterion: str, ok: bool, value: float, limit: str, message: str) -> None:
        out.append(Finding(group, criterion, bool(ok), float(value), limit, f"{group} {message}"))

    bad = list(metrics.attrs.get("nonfinite_members", []))
    add(
        "finite",
        not bad,
        len(bad),
        "0 members",
        f"finite: {len(bad)} members hold NaN or inf ({', '.join(bad[:3])})"
        if bad
        else "finite: every member is finite",
    )
    prior = metrics.sel(sample="prior")
    clim_std = metrics["clim_std"].values

    bias = np.abs(prior["mean_bias"].values) / clim_std
    c = int(np.nanargmax(bias))
    add(
        "bias",
        bias[c] <= config.max_bias,
        bias[c],
        f"<= {config.max_bias}",
        f"bias: channel {_channel_label(metrics, c)} mean is off the climatology by "
        f"{prior['mean_bias'].values[c]:+.3f} = {bias[c]:.2f} climatological std "
        f"(allowed {config.max_bias})",
    )

    ratio = prior["std"].values / clim_std
    c = int(np.nanargmax(np.abs(np.log(ratio))))
    low, high = config.min_std_ratio, config.max_std_ratio
    add(
        "spread",
        low <= np.nanmin(ratio) and np.nanmax(ratio) <= high,
        ratio[c],
        f"{low}-{high}",
        f"spread: channel {_channel_label(metrics, c)} std is {ratio[c]:.2f} of the "
        f"climatology's ({'too little' if ratio[c] < 1 else 'too much'} variance; allowed "
        f"{low}-{high})",
    )

    members = int(metrics.attrs["members"])
    if members >= 2:
        ssr = metrics["ssr_pooled"].sel(source="prior").values
        c = int(np.nanargmax(np.abs(np.log(ssr))))
        low, high = config.min_ssr, config.max_ssr
        add(
            "spread-skill",
            low <= np.nanmin(ssr) and np.nanmax(ssr) <= high,
            ssr[c],
            f"{low}-{high}",
            f"spread: channel {_channel_label(metrics, c)} spread-skill ratio is {ssr[c]:.2f} "
            f"({'under' if ssr[c] < 1 else 'over'}-dispersed; allowed {low}-{high})",
        )

    crps = metrics["fair_crps_mean"]
    skill = float(crps.sel(source="prior").mean() / crps.sel(source="climatology").mean())
    add(
        "skill",
        skill <= config.max_crps_ratio,
        skill,
        f"<= {config.max_crps_ratio}",
        f"skill: fair CRPS is {skill:.2f} times the climatology ensemble's "
        f"(allowed {config.max_crps_ratio})",
    )

    lags = [lag for lag in metrics["lag"].values if lag <= config.acf_lags]
    if lags:
        acf = metrics["acf"].sel(pairs="all", lag=lags)
        error = (acf.sel(sample="prior") - acf.sel(sample="archive")).values  # (lag, channel)
        i, c = np.unravel_index(int(np.nanargmax(np.abs(error))), error.shape)
        value = error[i, c]
        add(
            "autocorrelation",
            abs(value) <= config.max_acf_error,
            value,
            f"|.| <= {config.max_acf_error}",
            f"autocorrelation: channel {_channel_label(metrics, c)} lag {lags[i]} is "
            f"{acf.sel(sample='prior').values[i, c]:.2f}, the archive's "
            f"{acf.sel(sample='archive').values[i, c]:.2f} ({value:+.2f}; allowed "
            f"±{config.max_acf_error})",
        )

    seam = prior["seam_index"].values
    if np.isfinite(seam).any():
        c = int(np.nanargmax(seam))
        add(
            "seams",
            seam[c] <= config.max_seam_index,
            seam[c],
            f"<= {config.max_seam_index}",
            f"seams: channel {_channel_label(metrics, c)} steps across blanket seams are "
            f"{seam[c]:.2f} times larger (mean square) than inside blankets (allowed "
            f"{config.max_seam_index})",
        )

    if "spectrum_error" in metrics:
        spectrum = prior["spectrum_error"].values
        c = int(np.nanargmax(spectrum))
        add(
            "spectrum",
            spectrum[c] <= config.max_spectrum_error,
            spectrum[c],
            f"<= {config.max_spectrum_error}",
            f"spectrum: channel {_channel_label(metrics, c)} spatial spectrum shape is off the "
            f"archive's by {spectrum[c]:.2f} (RMS log2 ratio; allowed "
            f"{config.max_spectrum_error})",
        )

    reference = metrics["diurnal_reference"].values
    judged = np.isfinite(reference) & (reference >= 0.1 * clim_std)
    if judged.any():
        amp = np.where(judged, prior["diurnal_ratio"].values, np.nan)
        phase = np.where(judged, prior["diurnal_phase_error"].values, np.nan)
        low, high = config.min_diurnal_ratio, config.max_diurnal_ratio
        c = int(np.nanargmax(np.abs(np.log(np.maximum(amp, 1e-9)))))
        ok_amp = bool(np.nanmin(amp) >= low and np.nanmax(amp) <= high)
        p = int(np.nanargmax(np.abs(phase)))
        ok_phase = bool(np.nanmax(np.abs(phase)) <= config.max_diurnal_phase_hours)
        if ok_amp and not ok_phase:
            message = (
                f"diurnal: channel {_channel_label(metrics, p)} daily cycle peaks "
                f"{phase[p]:+.1f} h off the climatology's (allowed "
                f"±{config.max_diurnal_phase_hours} h)"
            )
            value = phase[p]
        else:
            message = (
                f"diurnal: channel {_channel_label(metrics, c)} daily-cycle amplitude is "
                f"{amp[c]:.2f} of the climatology's (allowed {low}-{high}); phase error up to "
                f"{phase[p]:+.1f} h"
            )
            value = amp[c]
        add(
            "diurnal",
            ok_amp and ok_phase,
            value,
            f"{low}-{high}, ±{config.max_diurnal_phase_hours} h",
            message,
        )
    return out


def key_numbers(metrics: Any) -> dict[str, Any]:
    """Channel-averaged numbers of one size, for the report, the CLI and the task's record.

    ``rmse``, ``spread``, ``ssr``, ``crps``, ``fair_crps`` per source (mean over leads; RMSE and
    spread as root-mean-squares), ``rmse_first``/``rmse_last`` (first step after the start and
    last lead), and the prior-specific numbers of the prior and the archive sample.
    """
    numbers: dict[str, Any] = {"states": int(metrics.attrs["states"])}
    for source in metrics["source"].values:
        m = metrics.sel(source=source)
        lead_index = 1 if m.sizes["lead"] > 1 else 0
        numbers[str(source)] = {
            "rmse": float(np.sqrt((m["rmse"] ** 2).mean())),
            "rmse_first": float(np.sqrt((m["rmse"].isel(lead=lead_index) ** 2).mean())),
            "rmse_last": float(np.sqrt((m["rmse"].isel(lead=-1) ** 2).mean())),
            "spread": float(np.sqrt((m["spread"] ** 2).mean())),
            "ssr": float(m["ssr_pooled"].mean()),
            "crps": float(m["crps"].mean()),
            "fair_crps": float(m["fair_crps"].mean()),
        }
    clim_std = metrics["clim_std"]
    for sample in metrics["sample"].values:
        s = metrics.sel(sample=sample)
        acf = s["acf"].sel(pairs="all")
        entry = {
            "bias": float((np.abs(s["mean_bias"]) / clim_std).max()),
            "std_ratio": float((s["std"] / clim_std).mean()),
            "lag1": float(acf.isel(lag=0).mean()),
            "lag_last": float(acf.isel(lag=-1).mean()),
            "seam_index": float(s["seam_index"].mean()),
            "diurnal_ratio": float(s["diurnal_ratio"].mean()),
            "diurnal_phase_hours": float(np.abs(s["diurnal_phase_error"]).max()),
        }
        if "spectrum_error" in s:
            entry["spectrum_error"] = float(s["spectrum_error"].max())
        numbers[f"{sample}_sample"] = entry
    numbers["max_lag"] = int(metrics["lag"].values[-1])
    return _finite(numbers)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------
# run_check


@dataclass
class CheckResult:
    """What :func:`run_check` returns: small and JSON-able through :meth:`to_dict`.

    Attributes:
        passed: the verdict.
        reasons: one line per failed criterion (empty when it passed).
        findings: every judged criterion (:class:`Finding`).
        numbers: key numbers per size (:func:`key_numbers`).
        run_dir, metrics, report: paths; plots: the PNG files.
        seconds: how long the check took.
    """

    passed: bool
    reasons: list[str]
    findings: list[Finding]
    numbers: dict[str, Any]
    run_dir: Path
    metrics: Path
    report: Path
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0

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
            "metrics": str(self.metrics),
            "report": str(self.report),
            "plots": [str(p) for p in self.plots],
            "seconds": self.seconds,
        }


def resolve_archive(run_dir: Path, attrs: dict[str, Any]) -> str:
    """The run's archive: ``archive`` of ``config.yaml``, else the model card's (relative to the
    model directory). :class:`ArchiveError` when neither names one."""
    import yaml

    path = run_dir / "config.yaml"
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        if isinstance(loaded, dict) and loaded.get("archive"):
            return str(loaded["archive"])
    card_archive = (attrs.get("card") or {}).get("archive")
    if card_archive:
        if "://" in card_archive or Path(card_archive).expanduser().is_absolute():
            return str(Path(card_archive).expanduser())
        return str(Path(str(attrs.get("model_path", "."))) / card_archive)
    raise ArchiveError(
        f"archive: the run {run_dir} names no archive (config.yaml nor the model card); "
        "give one with --archive PATH"
    )


def run_check(
    run_dir: str | os.PathLike[str],
    thresholds: CheckConfig | dict[str, Any] | None = None,
    archive: Any = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> CheckResult:
    """Check a finished run against its archive; write metrics, plots and a report in the run.

    Arguments:
        run_dir: ``<output_dir>/<run_id>`` holding ``prior.zarr`` (every size aggregated).
        thresholds: a :class:`CheckConfig`, a ``check:`` mapping, or None for the run's own
            ``check:`` section in ``config.yaml`` (defaults where it has none).
        archive: an opened :class:`~priorflow.data.archive.LatentArchive`, a path, or None for the
            run's archive (``config.yaml``, else the model card's).
        progress: called with a short line as each size is evaluated.

    Returns:
        The :class:`CheckResult`; ``<run_dir>/check/`` then holds ``metrics.zarr``,
        ``report.md`` and the PNGs (replacing an earlier check's, atomically).

    Raises:
        StoreError: no store, or a size that is not finished (not aggregated).
        ArchiveError: no archive, or one that does not hold the run's valid times.
        ConfigError: bad thresholds.
    """
    import warnings

    import zarr

    from priorflow.data.archive import open_archive
    from priorflow.evaluation.evaluate import NonFiniteRun, evaluate_group
    from priorflow.store import StoreError, open_group, read_store_attrs, store_path

    began = time.perf_counter()
    run_dir = Path(run_dir)
    store = store_path(run_dir)
    if not (store / "zarr.json").exists():
        raise StoreError(f"run: {run_dir} holds no {store.name}; give the directory of a run")
    config = load_check_config(run_dir) if thresholds is None else CheckConfig.parse(thresholds)
    attrs = read_store_attrs(store)
    groups = list(attrs["priorflow_schema"]["groups"])
    if not hasattr(archive, "states"):
        archive = open_archive(archive if archive is not None else resolve_archive(run_dir, attrs))
    say = progress or (lambda line: None)

    results: dict[str, Any] = {}
    diverged: dict[str, Finding] = {}
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
            diverged[group] = Finding(
                group,
                "finite",
                False,
                float(len(error.members)),
                "0 members",
                f"{group} finite: all {len(error.members)} members hold NaN or inf ({shown}); "
                "nothing else could be measured (the model diverged)",
            )

    findings = [
        f
        for group in groups
        for f in ([diverged[group]] if group in diverged else judge(results[group], config))
    ]
    reasons = [f.message for f in findings if not f.ok]
    numbers = {group: key_numbers(metrics) for group, metrics in results.items()}
    passed = not reasons

    final = run_dir / CHECK_DIR
    tmp = run_dir / f".{CHECK_DIR}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        plots: list[Path] = []
        if config.plots:
            from priorflow.evaluation.plots import plot_group

            for metrics in results.values():
                plots += plot_group(metrics, tmp, dpi=config.dpi)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.open_group(str(tmp / METRICS_NAME), mode="w", zarr_format=3)
            for group, metrics in results.items():
                ds = metrics.copy()
                ds.attrs = {k: _attr(v) for k, v in ds.attrs.items()}
                ds.to_zarr(
                    str(tmp / METRICS_NAME),
                    group=group,
                    mode="w",
                    zarr_format=3,
                    consolidated=False,
                )
            root = zarr.open_group(str(tmp / METRICS_NAME), mode="r+")
            root.attrs.update(
                {
                    "verdict": "pass" if passed else "fail",
                    "reasons": reasons,
                    "check_config": config.model_dump(),
                    "numbers": numbers,
                    "run_dir": str(run_dir),
                    "archive": str(getattr(archive, "path", "")),
                }
            )
            zarr.consolidate_metadata(str(tmp / METRICS_NAME))
        seconds = time.perf_counter() - began
        report = render_report(
            run_dir, passed, findings, numbers, results, [tmp / p.name for p in plots], config
        )
        (tmp / REPORT_NAME).write_text(report)
        move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CheckResult(
        passed=passed,
        reasons=reasons,
        findings=findings,
        numbers=numbers,
        run_dir=run_dir,
        metrics=final / METRICS_NAME,
        report=final / REPORT_NAME,
        plots=[final / p.name for p in plots],
        seconds=seconds,
    )


def _cell(value: Any) -> str:
    """A markdown table cell: pipes inside the text (e.g. ``|.| <= 0.2``) escaped."""
    return str(value).replace("|", "\\|")


def _attr(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_attr(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# the report


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
) -> str:
    """The markdown report: verdict, reasons, a table per criterion, key numbers, the plots as
    base64 data URIs (so a Prefect markdown artifact shows them)."""
    lines = [
        f"# Prior check: **{'PASS' if passed else 'FAIL'}**",
        "",
        f"Run `{run_dir}`; thresholds `check:` "
        + ", ".join(
            f"{k}={v}" for k, v in config.model_dump().items() if k.startswith(("max", "min"))
        ),
        "",
    ]
    reasons = [f.message for f in findings if not f.ok]
    if reasons:
        lines += ["## Reasons", "", *[f"- {r}" for r in reasons], ""]
    lines += [
        "## Verdict",
        "",
        "| size | criterion | worst value | allowed | status |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        status = "pass" if f.ok else "**FAIL**"
        cells = (f.group, f.criterion, _fmt(f.value), f.limit, status)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines.append("")
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
                f"| {source} | {_fmt(s['rmse'])} | {_fmt(s['rmse_first'])} "
                f"| {_fmt(s['rmse_last'])} | {_fmt(s['spread'])} "
                f"| {_fmt(s['ssr'])} "
                f"| {_fmt(s['crps'])} | {_fmt(s['fair_crps'])} |"
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
                return "-" if value is None else _fmt(value)

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
        for plot in plots:
            if plot.name.startswith(f"{group}-"):
                title = plot.stem.removeprefix(f"{group}-")
                lines += [f"![{group} {title}]({_data_uri(plot)})", ""]
    return "\n".join(lines)


def format_result(result: CheckResult) -> str:
    """Plain-text summary for the command line: verdict, reasons, key numbers per size."""
    lines = [f"prior check: {result.verdict.upper()}  ({result.run_dir})"]
    lines += [f"  {reason}" for reason in result.reasons]
    for group, n in result.numbers.items():
        lines.append(f"{group} ({n['states']} states)")
        lines.append("  source        RMSE  spread   SSR   fair CRPS")
        for source in ("prior", "climatology", "persistence"):
            s = n[source]
            lines.append(
                f"  {source:<12} {_fmt(s['rmse']):>5}  {_fmt(s['spread']):>6}"
                f"  {_fmt(s['ssr']):>5}"
                f"  {_fmt(s['fair_crps']):>9}"
            )
        for sample in ("prior", "archive"):
            s = n[f"{sample}_sample"]
            lines.append(
                f"  {sample:<8} bias {_fmt(s['bias'])}  std ratio "
                f"{_fmt(s['std_ratio'])}  lag-1 acf {_fmt(s['lag1'])}"
                f"  seam index {_fmt(s['seam_index'])}"
                f"  spectrum {_fmt(s.get('spectrum_error'))}"
            )
    lines.append(f"report   {result.report}")
    lines.append(f"metrics  {result.metrics}")
    return "\n".join(lines)


class CheckError(PriorflowError):
    """A failed prior check turned into an error (:meth:`CheckResult.raise_for_verdict`)."""
