"""Running sums over the start dates of one group: the prior's, the baselines' and the archive's.

One date's members and baselines are in memory at a time; everything else is a sum of fixed
size, so evaluating a run costs memory independent of its number of dates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from priorflow.evaluation import metrics
from priorflow.evaluation.baselines import date_baselines

SOURCES = ("prior", "climatology", "persistence")
SAMPLES = ("prior", "archive")


class Scores:
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


class SampleSums:
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


@dataclass(frozen=True)
class GroupLayout:
    """The shape of one group and what is measured on it."""

    D: int
    M: int
    T: int
    C: int
    spatial_shape: tuple[int, ...]
    dt: int
    K: int
    overlap: int
    fold: str
    channel_dim: str
    channel_axis: int
    seams: list[int]
    lags: list[int]
    spectral: int | None
    point: tuple[int, ...]
    plot_channels: list[int]
    map_state: int
    map_index: tuple[int | slice, ...] | None

    @classmethod
    def of(
        cls, dataset: Any, latent: Any, channel_dim: str, max_lag: int, plots: int
    ) -> GroupLayout:
        D, M, T, C = (int(n) for n in latent.shape[:4])
        spatial_shape = tuple(int(n) for n in latent.shape[4:])
        attrs = dataset.attrs
        # the run's sampling spec; a store of schema 1 (before the spec) named them differently
        K = int((attrs.get("card") or {}).get("blanket_size") or attrs["blanket_size"])
        overlap = int(attrs.get("blanket_overlap", attrs.get("overlap")))
        fold = str(attrs.get("fold_mode", "symmetrical"))
        return cls(
            D=D,
            M=M,
            T=T,
            C=C,
            spatial_shape=spatial_shape,
            dt=int(attrs.get("dt_hours", 1)),
            K=K,
            overlap=overlap,
            fold=fold,
            channel_dim=channel_dim,
            channel_axis=1 + list(dataset["latent"].dims[3:]).index(channel_dim),
            seams=metrics.seam_boundaries(T, K, overlap, fold),
            lags=list(range(1, max(1, min(int(max_lag), T - 1)) + 1)),
            spectral=spatial_shape[-1] // 2 + 1 if spatial_shape else None,
            point=tuple(n // 2 for n in spatial_shape),  # the plume's point: the grid's middle
            plot_channels=list(range(min(int(plots), C))),
            map_state=T // 2,
            map_index=_map_index(spatial_shape),
        )


def _map_index(spatial_shape: tuple[int, ...]) -> tuple[int | slice, ...] | None:
    """The maps' plane: the last two spatial axes, the others at their middle; None with fewer
    than two spatial axes (no maps)."""
    if len(spatial_shape) < 2:
        return None
    return (*(n // 2 for n in spatial_shape[:-2]), slice(None), slice(None))


class GroupSums:
    """Everything summed over the start dates of one group (one date in memory at a time)."""

    def __init__(self, layout: GroupLayout):
        T, C = layout.T, layout.C
        self.layout = layout
        self.scores = {name: Scores(T, C) for name in SOURCES}
        self.samples = {name: SampleSums(T, C, layout.lags, layout.spectral) for name in SAMPLES}
        self.clim_var = np.zeros((T, C))
        self.mean_var = np.zeros((T, C))
        self.ref_normal = np.zeros((3, 3))
        self.ref_rhs = np.zeros((3, C, *layout.spatial_shape))
        self.nonfinite: list[str] = []
        self.dates = 0
        self.plumes: list[dict[str, Any]] = []
        self.maps: list[dict[str, np.ndarray]] = []

    def add_date(
        self, start: datetime, x: np.ndarray, valid: np.ndarray, archive: Any, window: float
    ) -> None:
        """Add one start date: ``x (M, T, C, *sp)`` its members, ``valid (T,)`` their times."""
        layout = self.layout
        M, T, axis = layout.M, layout.T, layout.channel_axis
        finite = np.isfinite(x).reshape(M, -1).all(axis=1)
        for m in np.flatnonzero(~finite):
            self.nonfinite.append(f"{start:%Y-%m-%dT%H}-m{m}")
        x = x[finite]
        if len(x) == 0:
            return
        base = date_baselines(archive, start, T, layout.dt, M, window)
        # archive arrays are (T, *S) or (M, T, *S) in the store's state order: channel after T
        truth = np.moveaxis(base.truth.astype(np.float64), axis, 1)
        clim = np.moveaxis(base.climatology.astype(np.float64), axis + 1, 2)
        persistence = np.moveaxis(base.persistence.astype(np.float64), axis + 1, 2)
        mean = np.moveaxis(base.clim_mean, axis, 1)
        std = np.moveaxis(base.clim_std, axis, 1)
        count = base.clim_count.reshape(T, *([1] * (std.ndim - 1)))
        spatial = tuple(range(2, truth.ndim))

        self.scores["prior"].add(x, truth)
        self.scores["climatology"].add(clim, truth)
        self.scores["persistence"].add(persistence, truth)
        hours = (valid - valid.astype("datetime64[D]")) / np.timedelta64(1, "h")
        design = metrics.diurnal_design(hours)
        self.samples["prior"].add(x, mean, design)
        self.samples["archive"].add(clim, mean, design)
        self.clim_var += (std * std).mean(axis=spatial)
        self.mean_var += (std * std / count).mean(axis=spatial)
        self.ref_normal += design.T @ design
        self.ref_rhs += np.tensordot(design, mean, axes=(0, 0))
        self.plumes.append(self._plume(start, x, clim, truth, persistence[0]))
        if layout.map_index is not None:
            self.maps.append(self._maps(x, mean, std))
        self.dates += 1

    def _plume(
        self,
        start: datetime,
        x: np.ndarray,
        clim: np.ndarray,
        truth: np.ndarray,
        persistence: np.ndarray,
    ) -> dict[str, Any]:
        """One date at the plume's point and the plot channels; the prior padded with NaN to
        ``M`` members (members that are not finite are left out)."""
        layout = self.layout
        where = (slice(None), layout.plot_channels, *layout.point)
        prior = np.full((layout.M, layout.T, len(layout.plot_channels)), np.nan)
        prior[: len(x)] = x[(slice(None), *where)]
        return {
            "start": start,
            "prior": prior,
            "climatology": clim[(slice(None), *where)],
            "truth": truth[where],
            "persistence": persistence[where],
        }

    def _maps(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
        """Ensemble mean and standard deviation (ddof 1; NaN for one member) of the plot
        channels at the maps' state, and the climatological mean and std there."""
        layout = self.layout
        where = (layout.map_state, layout.plot_channels, *layout.map_index)
        members = x[(slice(None), *where)]
        spread = (
            members.std(axis=0, ddof=1) if len(members) > 1 else np.full_like(members[0], np.nan)
        )
        return {
            "mean": np.stack([members.mean(axis=0), mean[where]]),
            "std": np.stack([spread, std[where]]),
        }
