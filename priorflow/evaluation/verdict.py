"""The verdict of the prior check: each criterion judged on one size's metrics.

:func:`judge` applies every criterion of :data:`CRITERIA` to the metrics of one size
(:func:`~priorflow.evaluation.evaluate.evaluate_group`) with the thresholds of
:class:`~priorflow.config.CheckConfig`; :func:`key_numbers` gives the channel-averaged numbers
the report and the command line show. The criteria are described in
:mod:`priorflow.evaluation.check`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from priorflow.config import CheckConfig


@dataclass(frozen=True)
class Finding:
    """One judged criterion of one size: ``ok``, the worst value, the allowed range, a message."""

    group: str
    criterion: str
    ok: bool
    value: float
    limit: str
    message: str


#: ``(criterion, ok, worst value, allowed range, message)`` of one criterion.
_Judged = tuple[str, bool, float, str, str]


def _channel_label(metrics: Any, index: int) -> str:
    return str(metrics["channel"].values[index])


def _all_finite(metrics: Any, config: CheckConfig) -> _Judged | None:
    bad = list(metrics.attrs.get("nonfinite_members", []))
    return (
        "finite",
        not bad,
        len(bad),
        "0 members",
        f"finite: {len(bad)} members hold NaN or inf ({', '.join(bad[:3])})"
        if bad
        else "finite: every member is finite",
    )


def _bias(metrics: Any, config: CheckConfig) -> _Judged | None:
    prior = metrics.sel(sample="prior")
    clim_std = metrics["clim_std"].values
    bias = np.abs(prior["mean_bias"].values) / clim_std
    c = int(np.nanargmax(bias))
    return (
        "bias",
        bias[c] <= config.max_bias,
        bias[c],
        f"<= {config.max_bias}",
        f"bias: channel {_channel_label(metrics, c)} mean is off the climatology by "
        f"{prior['mean_bias'].values[c]:+.3f} = {bias[c]:.2f} climatological std "
        f"(allowed {config.max_bias})",
    )


def _spread(metrics: Any, config: CheckConfig) -> _Judged | None:
    prior = metrics.sel(sample="prior")
    clim_std = metrics["clim_std"].values
    ratio = prior["std"].values / clim_std
    c = int(np.nanargmax(np.abs(np.log(ratio))))
    low, high = config.min_std_ratio, config.max_std_ratio
    return (
        "spread",
        low <= np.nanmin(ratio) and np.nanmax(ratio) <= high,
        ratio[c],
        f"{low}-{high}",
        f"spread: channel {_channel_label(metrics, c)} std is {ratio[c]:.2f} of the "
        f"climatology's ({'too little' if ratio[c] < 1 else 'too much'} variance; allowed "
        f"{low}-{high})",
    )


def _spread_skill(metrics: Any, config: CheckConfig) -> _Judged | None:
    members = int(metrics.attrs["members"])
    if members >= 2:
        ssr = metrics["ssr_pooled"].sel(source="prior").values
        c = int(np.nanargmax(np.abs(np.log(ssr))))
        low, high = config.min_ssr, config.max_ssr
        return (
            "spread-skill",
            low <= np.nanmin(ssr) and np.nanmax(ssr) <= high,
            ssr[c],
            f"{low}-{high}",
            f"spread: channel {_channel_label(metrics, c)} spread-skill ratio is {ssr[c]:.2f} "
            f"({'under' if ssr[c] < 1 else 'over'}-dispersed; allowed {low}-{high})",
        )
    return None


def _skill(metrics: Any, config: CheckConfig) -> _Judged | None:
    crps = metrics["fair_crps_mean"]
    skill = float(crps.sel(source="prior").mean() / crps.sel(source="climatology").mean())
    return (
        "skill",
        skill <= config.max_crps_ratio,
        skill,
        f"<= {config.max_crps_ratio}",
        f"skill: fair CRPS is {skill:.2f} times the climatology ensemble's "
        f"(allowed {config.max_crps_ratio})",
    )


def _autocorrelation(metrics: Any, config: CheckConfig) -> _Judged | None:
    lags = [lag for lag in metrics["lag"].values if lag <= config.acf_lags]
    if lags:
        acf = metrics["acf"].sel(pairs="all", lag=lags)
        error = (acf.sel(sample="prior") - acf.sel(sample="archive")).values  # (lag, channel)
        i, c = np.unravel_index(int(np.nanargmax(np.abs(error))), error.shape)
        value = error[i, c]
        return (
            "autocorrelation",
            abs(value) <= config.max_acf_error,
            value,
            f"|.| <= {config.max_acf_error}",
            f"autocorrelation: channel {_channel_label(metrics, c)} lag {lags[i]} is "
            f"{acf.sel(sample='prior').values[i, c]:.2f}, the archive's "
            f"{acf.sel(sample='archive').values[i, c]:.2f} ({value:+.2f}; allowed "
            f"±{config.max_acf_error})",
        )
    return None


def _seams(metrics: Any, config: CheckConfig) -> _Judged | None:
    prior = metrics.sel(sample="prior")
    seam = prior["seam_index"].values
    if np.isfinite(seam).any():
        c = int(np.nanargmax(seam))
        return (
            "seams",
            seam[c] <= config.max_seam_index,
            seam[c],
            f"<= {config.max_seam_index}",
            f"seams: channel {_channel_label(metrics, c)} steps across blanket seams are "
            f"{seam[c]:.2f} times larger (mean square) than inside blankets (allowed "
            f"{config.max_seam_index})",
        )
    return None


def _spectrum(metrics: Any, config: CheckConfig) -> _Judged | None:
    prior = metrics.sel(sample="prior")
    if "spectrum_error" in metrics:
        spectrum = prior["spectrum_error"].values
        c = int(np.nanargmax(spectrum))
        return (
            "spectrum",
            spectrum[c] <= config.max_spectrum_error,
            spectrum[c],
            f"<= {config.max_spectrum_error}",
            f"spectrum: channel {_channel_label(metrics, c)} spatial spectrum shape is off the "
            f"archive's by {spectrum[c]:.2f} (RMS log2 ratio; allowed "
            f"{config.max_spectrum_error})",
        )
    return None


def _diurnal(metrics: Any, config: CheckConfig) -> _Judged | None:
    prior = metrics.sel(sample="prior")
    clim_std = metrics["clim_std"].values
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
        return (
            "diurnal",
            ok_amp and ok_phase,
            value,
            f"{low}-{high}, ±{config.max_diurnal_phase_hours} h",
            message,
        )
    return None


CRITERIA: tuple[Callable[[Any, CheckConfig], _Judged | None], ...] = (
    _all_finite,
    _bias,
    _spread,
    _spread_skill,
    _skill,
    _autocorrelation,
    _seams,
    _spectrum,
    _diurnal,
)


def judge(metrics: Any, config: CheckConfig) -> list[Finding]:
    """Judge one size's metrics against ``config``.

    Returns one :class:`Finding` per criterion that could be measured (spread-skill needs two
    members, seams more than one blanket, spectra a spatial dimension); the failed ones carry
    the reason as their message.
    """
    group = str(metrics.attrs["group"])
    findings = []
    for criterion in CRITERIA:
        judged = criterion(metrics, config)
        if judged is not None:
            name, ok, value, limit, message = judged
            findings.append(
                Finding(group, name, bool(ok), float(value), limit, f"{group} {message}")
            )
    return findings


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
    return _json_numbers(numbers)


def _json_numbers(value: Any) -> Any:
    """Non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
