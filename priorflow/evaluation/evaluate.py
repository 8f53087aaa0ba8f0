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
- ``plume_prior`` ``(start_date, member, lead, plot_channel)`` (NaN for members that are not
  finite), ``plume_climatology`` ``(start_date, clim_member, lead, plot_channel)``,
  ``plume_truth``, ``plume_persistence`` ``(start_date, lead, plot_channel)``: every start date
  (with a finite member) at one point;
- ``map_mean``, ``map_std`` ``(start_date, map_source, plot_channel, map_y, map_x)``: at the
  middle state (``map_state``, lead ``map_lead`` hours) of every start date, the prior's
  ensemble mean and standard deviation over members (``map_source`` prior) and the
  climatological mean and standard deviation at that valid time (climatology), on the last two
  spatial axes (others at their middle; no maps with fewer than two spatial axes).

Attributes: ``group``, ``states``, ``members``, ``dates``, ``dt_hours``, ``blanket_size``,
``overlap``, ``fold_mode``, ``seams`` (state indices), ``seam_leads`` (hours), ``window_days``,
``nonfinite_members`` (job-like labels), ``point`` (the plume's state index), ``map_state`` and
``map_lead``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from priorflow.errors import PriorflowError
from priorflow.evaluation import metrics
from priorflow.evaluation.accumulate import SAMPLES, SOURCES, GroupLayout, GroupSums

__all__ = ["SAMPLES", "SOURCES", "NonFiniteRun", "evaluate_group"]

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
            and the attributes ``dt_hours``, ``card`` (its ``blanket_size``),
            ``blanket_overlap``, ``fold_mode`` (the run's sampling spec).
        archive: the opened :class:`~priorflow.data.archive.LatentArchive` (truth and baselines).
        window_days: the climatology window (days either side of the day of year).
        max_lag: largest autocorrelation lag, in states (capped at ``T - 1``).
        plot_channels: channels kept for the plume plot.
        progress: called as ``progress(dates_done, dates)``.

    Returns:
        The metrics dataset described in the module docstring.
    """
    import xarray as xr

    if tuple(archive.state_shape) != tuple(int(n) for n in dataset["latent"].shape[3:]):
        raise PriorflowError(
            f"archive: states of shape {tuple(archive.state_shape)}, the run's are "
            f"{tuple(dataset['latent'].shape[3:])}; check it against the archive the model "
            "was trained on (--archive)"
        )
    latent, channel_dim = _channel_first(dataset["latent"])
    layout = GroupLayout.of(dataset, latent, channel_dim, max_lag, plot_channels)
    sums = GroupSums(layout)
    starts = dataset["start_date"].values
    for d in range(layout.D):
        x = np.asarray(latent[d].values, dtype=np.float64)  # (M, T, C, *sp)
        valid = dataset["valid_time"].values[d]
        sums.add_date(_as_datetime(starts[d]), x, valid, archive, window_days)
        if progress is not None:
            progress(d + 1, layout.D)
        del x
    if sums.dates == 0:
        span = dataset.attrs.get("span_hours", layout.T * layout.dt)
        raise NonFiniteRun(f"{span}h", sums.nonfinite)

    data_vars = {**_score_variables(sums), **_sample_variables(sums)}
    coords: dict[str, Any] = {
        "source": list(SOURCES),
        "sample": list(SAMPLES),
        "pairs": list(PAIRS),
        "lead": ("lead", dataset["lead"].values, {"units": "hours"}),
        "channel": (
            dataset[channel_dim].values if channel_dim in dataset.coords else np.arange(layout.C)
        ),
        "lag": ("lag", np.array(layout.lags), {"units": "states"}),
        "plot_channel": np.array(layout.plot_channels),
    }
    if layout.spectral is not None:
        data_vars |= _spectrum_variables(sums)
        coords["wavenumber"] = np.arange(layout.spectral)
    data_vars |= _plume_variables(sums.plumes)
    coords["member"] = np.arange(layout.M)
    coords["start_date"] = np.array([p["start"] for p in sums.plumes], dtype="datetime64[ns]")
    if sums.maps:
        data_vars |= _map_variables(sums.maps)
        coords["map_source"] = ["prior", "climatology"]
    out = xr.Dataset(data_vars, coords=coords)
    out.attrs.update(_attributes(dataset, layout, sums, window_days))
    return out


def _score_variables(sums: GroupSums) -> dict[str, Any]:
    """RMSE, spread, spread-skill ratio and CRPS of every source, by lead and pooled."""
    n = float(sums.dates)

    def stack(name: str) -> np.ndarray:
        return np.stack([getattr(sums.scores[s], name) / n for s in SOURCES])

    mse, var = stack("mse"), stack("var")
    members = np.array([sums.layout.M, sums.layout.M, 1])
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
    by_lead = ("source", "lead", "channel")
    return {
        "rmse": (by_lead, rmse),
        "spread": (by_lead, spread),
        "ssr": (by_lead, ssr),
        "crps": (by_lead, crps),
        "fair_crps": (by_lead, fair),
        "ssr_pooled": (("source", "channel"), ssr_pooled),
        "fair_crps_mean": (("source", "channel"), fair.mean(axis=1)),
    }


def _sample_variables(sums: GroupSums) -> dict[str, Any]:
    """Bias, spread, daily cycle, autocorrelation and seams of the prior and archive samples."""
    layout, samples, n = sums.layout, sums.samples, float(sums.dates)
    clim_std_lead = np.sqrt(sums.clim_var / n)
    clim_std = np.sqrt((sums.clim_var / n).mean(axis=0))
    bias, std, std_lead = [], [], []
    for name in SAMPLES:
        s = samples[name]
        b = s.dev.sum(axis=0) / s.count.sum(axis=0)
        msd = s.dev2.sum(axis=0) / s.count.sum(axis=0)
        bias.append(b)
        std.append(np.sqrt(np.maximum(msd - b * b - (sums.mean_var / n).mean(axis=0), 0)))
        std_lead.append(np.sqrt(s.dev2 / s.count))

    C = layout.C
    reference = metrics.diurnal_fit(sums.ref_normal, sums.ref_rhs).reshape(C, -1)
    diurnal = [
        metrics.diurnal_fit(samples[s].normal, samples[s].rhs).reshape(C, -1) for s in SAMPLES
    ]
    # the archive's own members estimate the noise of a harmonic fitted to this much data
    noise = np.mean(np.abs(diurnal[1] - reference) ** 2, axis=1)
    summaries = [metrics.diurnal_summary(z, reference, noise) for z in diurnal]

    T, lags = layout.T, layout.lags
    all_pairs = np.arange(T)[None, :] + np.array(lags)[:, None] < T
    across = metrics.crossing_mask(T, lags, layout.seams)
    masks = {"all": all_pairs, "inside": all_pairs & ~across, "across": across}
    acf = np.stack(
        [
            np.stack([metrics.lag_correlation(samples[s].lag, masks[p]) for p in PAIRS])
            for s in SAMPLES
        ]
    )
    seam = np.stack([metrics.seam_index(samples[s].increments, layout.seams) for s in SAMPLES])
    increments = np.stack([samples[s].increments / samples[s].count for s in SAMPLES])
    increments[:, 0] = np.nan  # no step arrives at the first state
    per_sample = ("sample", "channel")
    return {
        "mean_bias": (per_sample, np.stack(bias)),
        "std": (per_sample, np.stack(std)),
        "clim_std": (("channel",), clim_std),
        "std_by_lead": (("sample", "lead", "channel"), np.stack(std_lead)),
        "clim_std_by_lead": (("lead", "channel"), clim_std_lead),
        "diurnal_amplitude": (per_sample, np.stack([s[0] for s in summaries])),
        "diurnal_reference": (("channel",), summaries[0][1]),
        "diurnal_ratio": (per_sample, np.stack([s[2] for s in summaries])),
        "diurnal_phase_error": (per_sample, np.stack([s[3] for s in summaries])),
        "acf": (("sample", "pairs", "lag", "channel"), acf),
        "seam_index": (per_sample, seam),
        "increment_by_lead": (("sample", "lead", "channel"), increments),
    }


def _spectrum_variables(sums: GroupSums) -> dict[str, Any]:
    """Zonal spectra of both samples and the prior's shape error against the archive's."""
    spectra = np.stack(
        [sums.samples[s].spectrum / max(sums.samples[s].spectrum_count, 1) for s in SAMPLES]
    )
    return {
        "spectrum": (("sample", "channel", "wavenumber"), spectra),
        "spectrum_error": (
            ("sample", "channel"),
            metrics.spectrum_shape_error(spectra, spectra[1:2]),
        ),
    }


def _plume_variables(plumes: list[dict[str, Any]]) -> dict[str, Any]:
    """Every start date at one point: members, climatology, truth and persistence."""
    return {
        "plume_prior": (
            ("start_date", "member", "lead", "plot_channel"),
            np.stack([p["prior"] for p in plumes]),
        ),
        "plume_climatology": (
            ("start_date", "clim_member", "lead", "plot_channel"),
            np.stack([p["climatology"] for p in plumes]),
        ),
        "plume_truth": (
            ("start_date", "lead", "plot_channel"),
            np.stack([p["truth"] for p in plumes]),
        ),
        "plume_persistence": (
            ("start_date", "lead", "plot_channel"),
            np.stack([p["persistence"] for p in plumes]),
        ),
    }


def _map_variables(maps: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Per start date at the maps' state: the prior's ensemble mean and std and the
    climatological mean and std (``map_source``), plot channels, the last two spatial axes."""
    dims = ("start_date", "map_source", "plot_channel", "map_y", "map_x")
    return {
        "map_mean": (dims, np.stack([m["mean"] for m in maps])),
        "map_std": (dims, np.stack([m["std"] for m in maps])),
    }


def _attributes(
    dataset: Any, layout: GroupLayout, sums: GroupSums, window_days: float
) -> dict[str, Any]:
    T, dt = layout.T, layout.dt
    return {
        "group": str(dataset.attrs.get("span_hours", T * dt)) + "h",
        "states": T,
        "members": layout.M,
        "dates": sums.dates,
        "dt_hours": dt,
        "blanket_size": layout.K,
        "overlap": layout.overlap,
        "fold_mode": layout.fold,
        "seams": [int(s) for s in layout.seams],
        "seam_leads": [int(s) * dt for s in layout.seams],
        "window_days": float(window_days),
        "nonfinite_members": sums.nonfinite,
        "point": [int(i) for i in layout.point],
        "points": int(np.prod(layout.spatial_shape, dtype=np.int64)),
        "map_state": layout.map_state,
        "map_lead": layout.map_state * dt,
    }
