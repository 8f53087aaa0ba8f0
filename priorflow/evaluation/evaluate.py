r"""Evaluate one trajectory size of a run against the archive: the metrics as an ``xarray.Dataset``.

For every start date (one at a time, so memory holds one date's ``M`` members and its baselines)
the prior members are compared with the ground truth, the climatology members and persistence
(:mod:`priorflow.evaluation.baselines`), and the prior-specific statistics of the members are accumulated
next to the same statistics of the climatology members (real archive trajectories at the same
hours: the ``archive`` sample). The formulas are in :mod:`priorflow.evaluation.metrics`.

The dataset (:func:`evaluate_group`) has dimensions ``source`` (prior, climatology,
persistence), ``sample`` (prior, archive), ``lead`` (hours), ``channel``, ``lag`` (states),
``pairs`` (all, inside, across), ``wavenumber``, ``member``, ``plot_channel``, and holds:

- ``rmse``, ``spread``, ``ssr``, ``crps``, ``fair_crps`` ``(source, lead, channel)``: per lead,
  averaged over dates and points (RMSE and spread are root-mean-squares; the SSR is NaN for one
  member, e.g. persistence); the pooled ``ssr_pooled`` and ``fair_crps_mean``
  ``(source, channel)`` over all leads;
- ``mean_bias`` ``(sample, channel)``: mean of ``x - clim_mean`` over dates, members, leads and
  points; ``std`` ``(sample, channel)``: the standard deviation around ``clim_mean + bias``
  (minus the variance of the climatological mean estimate); ``clim_std`` ``(channel)``: the
  RMS of the climatological standard deviation; ``std_by_lead`` ``(sample, lead, channel)`` and
  ``clim_std_by_lead`` ``(lead, channel)``;
- ``diurnal_amplitude`` ``(sample, channel)`` with ``diurnal_reference`` ``(channel)`` (the
  climatological mean's), ``diurnal_ratio`` and ``diurnal_phase_error`` (hours)
  ``(sample, channel)``;
- ``acf`` ``(sample, pairs, lag, channel)``; ``seam_index`` ``(sample, channel)``;
  ``increment_by_lead`` ``(sample, lead, channel)``: mean squared one-step increment of the
  anomalies arriving at each lead;
- ``spectrum`` ``(sample, channel, wavenumber)`` (zonal, along the last state dimension);
- ``plume_prior``, ``plume_climatology`` ``(member, lead, plot_channel)``, ``plume_truth``,
  ``plume_persistence`` ``(lead, plot_channel)``: the first start date at one point.

Attributes: ``group``, ``states``, ``members``, ``dates``, ``dt_hours``, ``blanket_size``,
``overlap``, ``fold_mode``, ``seams`` (state indices), ``seam_leads`` (hours), ``window_days``,
``nonfinite_members`` (job-like labels), ``point`` (the plume's state index).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from priorflow.evaluation import metrics
from priorflow.evaluation.baselines import date_baselines
from priorflow.errors import PriorflowError

__all__ = ["SAMPLES", "SOURCES", "NonFiniteRun", "evaluate_group"]

SOURCES = ("prior", "climatology", "persistence")
SAMPLES = ("prior", "archive")
PAIRS = ("all", "inside", "across")


class NonFiniteRun(PriorflowError):
    """Every member of a size holds NaN or inf: nothing to measure (the model diverged)."""

    def __init__(self, group: str, members: list[str]):
        super().__init__(f"{group}: every member holds NaN or inf; nothing to evaluate")
        self.group = group
        self.members = members


def _as_datetime(value: np.datetime64) -> datetime:
    return np.datetime64(value, "s").astype(datetime)


def _channel_first(latent: Any) -> tuple[Any, str]:
    """The latent variable with the channel dimension right after ``lead``, and its name."""
    state_dims = [d for d in latent.dims if d not in ("start_date", "member", "lead")]
    channel = "channel" if "channel" in state_dims else state_dims[0]
    order = ["start_date", "member", "lead", channel, *[d for d in state_dims if d != channel]]
    return latent.transpose(*order), channel


class _Scores:
    """Running sums of the ensemble scores of one source, ``(T, C)`` each."""

    def __init__(self, T: int, C: int):
        self.mse = np.zeros((T, C))
        self.var = np.zeros((T, C))
        self.crps = np.zeros((T, C))
        self.fair = np.zeros((T, C))

    def add(self, ensemble: np.ndarray, truth: np.ndarray) -> None:
        """``ensemble (M, T, C, *sp)``, ``truth (T, C, *sp)``."""
        spatial = tuple(range(2, truth.ndim))
        mean = ensemble.mean(axis=0)
        self.mse += ((mean - truth) ** 2).mean(axis=spatial)
        if ensemble.shape[0] > 1:
            self.var += ensemble.var(axis=0, ddof=1).mean(axis=spatial)
        self.crps += metrics.crps_ensemble(ensemble, truth).mean(axis=spatial)
        self.fair += metrics.crps_ensemble(ensemble, truth, fair=True).mean(axis=spatial)


class _Sample:
    """Running sums of the prior-specific statistics of one sample (prior or archive)."""

    def __init__(self, T: int, C: int, lags: list[int], spectral: int | None):
        L = len(lags)
        self.lags = lags
        self.dev = np.zeros((T, C))
        self.dev2 = np.zeros((T, C))
        self.count = np.zeros((T, C))
        self.normal = np.zeros((3, 3))
        self.rhs: np.ndarray | None = None
        self.lag = np.zeros((3, L, T, C))
        self.increments = np.zeros((T, C))
        self.spectrum = None if spectral is None else np.zeros((C, spectral))
        self.spectrum_count = 0

    def add(self, x: np.ndarray, mean: np.ndarray, design: np.ndarray) -> None:
        """``x (M, T, C, *sp)``, climatological ``mean (T, C, *sp)``, ``design (T, 3)``."""
        M = x.shape[0]
        spatial = tuple(range(3, x.ndim))
        points = int(np.prod(x.shape[3:], dtype=np.int64))
        dev = x - mean[None]
        self.dev += dev.sum(axis=(0, *spatial))
        self.dev2 += (dev * dev).sum(axis=(0, *spatial))
        self.count += M * points
        self.normal += M * design.T @ design
        rhs = np.tensordot(design, x.sum(axis=0), axes=(0, 0))  # (3, C, *sp)
        self.rhs = rhs if self.rhs is None else self.rhs + rhs
        anomalies = metrics.ensemble_anomalies(x, mean[None])
        self.lag += metrics.lag_sums(anomalies, self.lags)
        self.increments += metrics.increment_sums(anomalies)
        if self.spectrum is not None:
            power = metrics.zonal_spectrum(anomalies, axis=-1)  # (M, T, C, ..., K)
            axes = (0, 1, *range(3, power.ndim - 1))
            self.spectrum += power.mean(axis=axes)
            self.spectrum_count += 1


def evaluate_group(
    dataset: Any,
    archive: Any,
    *,
    window_days: float = 15,
    max_lag: int = 12,
    plot_channels: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Metrics of one store group (a lazy ``xarray.Dataset`` from :func:`priorflow.store.open_group`).

    Arguments:
        dataset: the group: ``latent(start_date, member, lead, *state dims)``, ``valid_time``
            and the attributes ``dt_hours``, ``blanket_size``, ``overlap``, ``fold_mode``.
        archive: the opened :class:`~priorflow.data.archive.LatentArchive` (truth and baselines).
        window_days: the climatology window (days either side of the day of year).
        max_lag: largest autocorrelation lag, in states (capped at ``T - 1``).
        plot_channels: channels kept for the plume plot.
        progress: called as ``progress(dates_done, dates)``.

    Returns:
        The metrics dataset described in the module docstring.
    """
    import xarray as xr

    latent, channel_dim = _channel_first(dataset["latent"])
    D, M, T, C = (int(n) for n in latent.shape[:4])
    spatial_shape = tuple(int(n) for n in latent.shape[4:])
    attrs = dataset.attrs
    dt = int(attrs.get("dt_hours", 1))
    K = int(attrs["blanket_size"])
    overlap = int(attrs["overlap"])
    fold = str(attrs.get("fold_mode", "symmetrical"))
    if tuple(archive.state_shape) != tuple(int(n) for n in dataset["latent"].shape[3:]):
        raise PriorflowError(
            f"archive: states of shape {tuple(archive.state_shape)}, the run's are "
            f"{tuple(dataset['latent'].shape[3:])}; check it against the archive the model "
            "was trained on (--archive)"
        )
    channel_axis = 1 + list(dataset["latent"].dims[3:]).index(channel_dim)
    seams = metrics.seam_boundaries(T, K, overlap, fold)
    lags = list(range(1, max(1, min(int(max_lag), T - 1)) + 1))
    spectral = spatial_shape[-1] // 2 + 1 if spatial_shape else None
    P = int(np.prod(spatial_shape, dtype=np.int64))
    point = tuple(s // 2 for s in spatial_shape)  # the plume's point: the middle of the grid
    plot_c = list(range(min(int(plot_channels), C)))

    scores = {name: _Scores(T, C) for name in SOURCES}
    samples = {name: _Sample(T, C, lags, spectral) for name in SAMPLES}
    clim_var = np.zeros((T, C))
    mean_var = np.zeros((T, C))
    ref_normal = np.zeros((3, 3))
    ref_rhs = np.zeros((3, C, *spatial_shape))
    nonfinite: list[str] = []
    used_dates = 0
    plume: dict[str, np.ndarray] = {}
    starts = dataset["start_date"].values
    for d in range(D):
        start = _as_datetime(starts[d])
        x = np.asarray(latent[d].values, dtype=np.float64)  # (M, T, C, *sp)
        finite = np.isfinite(x).reshape(M, -1).all(axis=1)
        for m in np.flatnonzero(~finite):
            nonfinite.append(f"{start:%Y-%m-%dT%H}-m{m}")
        x = x[finite]
        if len(x) == 0:
            continue
        base = date_baselines(archive, start, T, dt, M, window_days)
        # archive arrays are (T, *S) or (M, T, *S) in the store's state order: channel after T
        truth = np.moveaxis(base.truth.astype(np.float64), channel_axis, 1)
        clim = np.moveaxis(base.climatology.astype(np.float64), channel_axis + 1, 2)
        persistence = np.moveaxis(base.persistence.astype(np.float64), channel_axis + 1, 2)
        mean = np.moveaxis(base.clim_mean, channel_axis, 1)
        std = np.moveaxis(base.clim_std, channel_axis, 1)
        count = base.clim_count.reshape(T, *([1] * (std.ndim - 1)))
        spatial = tuple(range(2, truth.ndim))

        scores["prior"].add(x, truth)
        scores["climatology"].add(clim, truth)
        scores["persistence"].add(persistence, truth)
        valid = dataset["valid_time"].values[d]
        hours = (valid - valid.astype("datetime64[D]")) / np.timedelta64(1, "h")
        design = metrics.diurnal_design(hours)
        samples["prior"].add(x, mean, design)
        samples["archive"].add(clim, mean, design)
        clim_var += (std * std).mean(axis=spatial)
        mean_var += (std * std / count).mean(axis=spatial)
        ref_normal += design.T @ design
        ref_rhs += np.tensordot(design, mean, axes=(0, 0))
        if not plume:
            where = (slice(None), plot_c, *point)
            plume = {
                "prior": x[(slice(None), *where)],
                "climatology": clim[(slice(None), *where)],
                "truth": truth[where],
                "persistence": persistence[0][where],
            }
        used_dates += 1
        if progress is not None:
            progress(d + 1, D)
        del x, clim, truth, base

    if used_dates == 0:
        raise NonFiniteRun(f"{attrs.get('span_hours', T * dt)}h", nonfinite)
    n = float(used_dates)
    lead = dataset["lead"].values
    channels = dataset[channel_dim].values if channel_dim in dataset.coords else np.arange(C)

    def stack(name: str) -> np.ndarray:
        return np.stack([getattr(scores[s], name) / n for s in SOURCES])

    mse, var = stack("mse"), stack("var")
    members = np.array([M, M, 1])
    rmse, spread = np.sqrt(mse), np.sqrt(var)
    ssr = np.stack(
        [metrics.spread_skill_ratio(spread[i], rmse[i], int(members[i])) for i in range(3)]
    )
    ssr_pooled = np.stack(
        [
            metrics.spread_skill_ratio(
                np.sqrt(var[i].mean(axis=0)), np.sqrt(mse[i].mean(axis=0)), int(members[i])
            )
            for i in range(3)
        ]
    )
    single = members < 2  # one member has no spread: no spread-skill ratio
    ssr[single], ssr_pooled[single] = np.nan, np.nan
    crps, fair = stack("crps"), stack("fair")

    clim_std_lead = np.sqrt(clim_var / n)
    clim_std = np.sqrt((clim_var / n).mean(axis=0))
    bias, std, std_lead = [], [], []
    for name in SAMPLES:
        s = samples[name]
        b = s.dev.sum(axis=0) / s.count.sum(axis=0)
        msd = s.dev2.sum(axis=0) / s.count.sum(axis=0)
        bias.append(b)
        std.append(np.sqrt(np.maximum(msd - b * b - (mean_var / n).mean(axis=0), 0)))
        std_lead.append(np.sqrt(s.dev2 / s.count))

    reference = metrics.diurnal_fit(ref_normal, ref_rhs).reshape(C, -1)
    diurnal = [
        metrics.diurnal_fit(samples[s].normal, samples[s].rhs).reshape(C, -1) for s in SAMPLES
    ]
    # the archive's own members estimate the noise of a harmonic fitted to this much data
    noise = np.mean(np.abs(diurnal[1] - reference) ** 2, axis=1)
    summaries = [metrics.diurnal_summary(z, reference, noise) for z in diurnal]

    all_pairs = np.arange(T)[None, :] + np.array(lags)[:, None] < T
    across = metrics.crossing_mask(T, lags, seams)
    masks = {"all": all_pairs, "inside": all_pairs & ~across, "across": across}
    acf = np.stack(
        [
            np.stack([metrics.lag_correlation(samples[s].lag, masks[p]) for p in PAIRS])
            for s in SAMPLES
        ]
    )
    seam = np.stack([metrics.seam_index(samples[s].increments, seams) for s in SAMPLES])
    increments = np.stack([samples[s].increments / samples[s].count for s in SAMPLES])
    increments[:, 0] = np.nan  # no step arrives at the first state

    data_vars: dict[str, Any] = {
        "rmse": (("source", "lead", "channel"), rmse),
        "spread": (("source", "lead", "channel"), spread),
        "ssr": (("source", "lead", "channel"), ssr),
        "crps": (("source", "lead", "channel"), crps),
        "fair_crps": (("source", "lead", "channel"), fair),
        "ssr_pooled": (("source", "channel"), ssr_pooled),
        "fair_crps_mean": (("source", "channel"), fair.mean(axis=1)),
        "mean_bias": (("sample", "channel"), np.stack(bias)),
        "std": (("sample", "channel"), np.stack(std)),
        "clim_std": (("channel",), clim_std),
        "std_by_lead": (("sample", "lead", "channel"), np.stack(std_lead)),
        "clim_std_by_lead": (("lead", "channel"), clim_std_lead),
        "diurnal_amplitude": (("sample", "channel"), np.stack([s[0] for s in summaries])),
        "diurnal_reference": (("channel",), summaries[0][1]),
        "diurnal_ratio": (("sample", "channel"), np.stack([s[2] for s in summaries])),
        "diurnal_phase_error": (("sample", "channel"), np.stack([s[3] for s in summaries])),
        "acf": (("sample", "pairs", "lag", "channel"), acf),
        "seam_index": (("sample", "channel"), seam),
        "increment_by_lead": (("sample", "lead", "channel"), increments),
    }
    coords: dict[str, Any] = {
        "source": list(SOURCES),
        "sample": list(SAMPLES),
        "pairs": list(PAIRS),
        "lead": ("lead", lead, {"units": "hours"}),
        "channel": channels,
        "lag": ("lag", np.array(lags), {"units": "states"}),
        "plot_channel": np.array(plot_c),
    }
    if spectral is not None:
        data_vars["spectrum"] = (
            ("sample", "channel", "wavenumber"),
            np.stack([samples[s].spectrum / max(samples[s].spectrum_count, 1) for s in SAMPLES]),
        )
        coords["wavenumber"] = np.arange(spectral)
        spectra = data_vars["spectrum"][1]
        data_vars["spectrum_error"] = (
            ("sample", "channel"),
            metrics.spectrum_shape_error(spectra, spectra[1:2]),
        )
    if plume:
        kept = plume["prior"].shape[0]
        data_vars["plume_prior"] = (("member", "lead", "plot_channel"), plume["prior"])
        data_vars["plume_climatology"] = (
            ("clim_member", "lead", "plot_channel"),
            plume["climatology"],
        )
        data_vars["plume_truth"] = (("lead", "plot_channel"), plume["truth"])
        data_vars["plume_persistence"] = (("lead", "plot_channel"), plume["persistence"])
        coords["member"] = np.arange(kept)
    out = xr.Dataset(data_vars, coords=coords)
    out.attrs.update(
        {
            "group": str(attrs.get("span_hours", T * dt)) + "h",
            "states": T,
            "members": M,
            "dates": used_dates,
            "dt_hours": dt,
            "blanket_size": K,
            "overlap": overlap,
            "fold_mode": fold,
            "seams": [int(s) for s in seams],
            "seam_leads": [int(s) * dt for s in seams],
            "window_days": float(window_days),
            "nonfinite_members": nonfinite,
            "point": [int(i) for i in point],
            "points": P,
            "plume_start_date": str(np.datetime64(starts[0], "h")),
        }
    )
    return out
