"""The prior check's plots (matplotlib, Agg backend), drawn from the metrics datasets.

Per size (``<group>-<name>.png``): ``plumes-<date>`` (one per start date: the members at the
grid's middle point against the truth, climatology members and persistence, seams marked),
``maps-<date>`` (one per start date: the prior's ensemble mean and standard deviation at the
middle state beside the archive's climatological mean and standard deviation at that valid time,
each pair on one colour scale), ``autocorrelation`` (lag correlation of the prior and the
archive, inside blankets and across seams, the blanket length ``K`` marked; mean squared
one-step increment by lead with the seams marked), ``skill`` (RMSE, spread and fair CRPS by
lead for the prior and the baselines; std by lead against the climatology) and ``spectra``
(zonal spectra of the prior and the archive). With the learned verdict,
``blankets-<K>-ranks.png``: the rank histogram of the archive's windows among the model's
blankets per channel (:mod:`priorflow.evaluation.ranks`). Legends sit outside the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["date_label", "plot_group", "plot_ranks"]

_PRIOR = "tab:blue"
_CLIM = "tab:gray"
_PERSIST = "tab:orange"
_TRUTH = "black"


def _figure(
    ncols: int, dpi: int, nrows: int = 1, height: float = 3.0, **kwargs: Any
) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, height * nrows), dpi=dpi, squeeze=False, **kwargs
    )
    return fig, axes[0] if nrows == 1 else axes


def _save(fig: Any, path: Path, outside: bool = True) -> Path:
    """Save as a small PNG: rendered by Agg (``outside``: the bounding box grown to hold legends
    outside the axes, one more drawing), then reduced to a 64-colour palette (about a third of
    the bytes; the report embeds every PNG)."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    if outside and fig.get_layout_engine() is None:
        fig.tight_layout()
    buffer = io.BytesIO()
    tight = {"bbox_inches": "tight", "pad_inches": 0.05} if outside else {}
    fig.savefig(buffer, format="png", dpi=fig.dpi, **tight)
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        small.save(path, format="PNG", optimize=True)
    return path


def _legend_below(fig: Any, axes: Any, ncol: int = 5) -> None:
    """One legend for the figure, below the axes: the labelled lines of every panel, once."""
    seen: dict[str, Any] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.tight_layout()
    fig.legend(
        list(seen.values()),
        list(seen),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(ncol, len(seen)),
        fontsize=7,
        frameon=False,
    )


def _seams(ax: Any, leads: list[int]) -> None:
    for i, lead in enumerate(leads):
        ax.axvline(
            lead, color="tab:red", lw=0.6, ls=":", alpha=0.7, label="seam" if i == 0 else None
        )


def date_label(value: Any) -> str:
    """A start date as it appears in file names and titles: ``2000-03-20T00``."""
    return str(np.datetime64(value, "h"))[:13]


def plot_group(metrics: Any, directory: Path, dpi: int = 80) -> list[Path]:
    """Write the PNGs of one size into ``directory``; returns their paths."""
    group = str(metrics.attrs["group"])
    directory = Path(directory)
    paths = []
    for i, start in enumerate(metrics["start_date"].values):
        date = date_label(start)
        paths.append(plot_plumes(metrics, i, directory / f"{group}-plumes-{date}.png", dpi))
        if "map_mean" in metrics:
            paths.append(plot_maps(metrics, i, directory / f"{group}-maps-{date}.png", dpi))
    paths.append(plot_autocorrelation(metrics, directory / f"{group}-autocorrelation.png", dpi))
    paths.append(plot_skill(metrics, directory / f"{group}-skill.png", dpi))
    if "spectrum" in metrics:
        paths.append(plot_spectra(metrics, directory / f"{group}-spectra.png", dpi))
    return paths


def plot_plumes(metrics: Any, date: int, path: Path, dpi: int = 80) -> Path:
    """Members of start date ``date`` (index) at the middle point, per plot channel."""
    channels = metrics["plot_channel"].values
    fig, axes = _figure(len(channels), dpi)
    lead = metrics["lead"].values
    plume = metrics.isel(start_date=date)
    for ax, c in zip(axes, range(len(channels)), strict=True):
        clim = plume["plume_climatology"].values[:, :, c]
        prior = plume["plume_prior"].values[:, :, c]
        for m in range(clim.shape[0]):
            ax.plot(
                lead,
                clim[m],
                color=_CLIM,
                lw=0.8,
                alpha=0.7,
                label="climatology members" if m == 0 else None,
            )
        for m in range(prior.shape[0]):
            ax.plot(
                lead,
                prior[m],
                color=_PRIOR,
                lw=0.9,
                alpha=0.8,
                label="prior members" if m == 0 else None,
            )
        ax.plot(
            lead,
            plume["plume_persistence"].values[:, c],
            color=_PERSIST,
            lw=1.2,
            ls="--",
            label="persistence",
        )
        ax.plot(lead, plume["plume_truth"].values[:, c], color=_TRUTH, lw=1.4, label="truth")
        _seams(ax, list(metrics.attrs.get("seam_leads", [])))
        ax.set_title(
            f"channel {metrics['channel'].values[channels[c]]}, point "
            f"{tuple(metrics.attrs.get('point', []))}",
            fontsize=8,
        )
        ax.set_xlabel("lead (h)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(
        f"{metrics.attrs['group']}: start {date_label(metrics['start_date'].values[date])}",
        fontsize=9,
    )
    _legend_below(fig, axes)
    return _save(fig, path)


def plot_maps(metrics: Any, date: int, path: Path, dpi: int = 80) -> Path:
    """Prior ensemble mean and std beside the climatological mean and std at the middle state
    of start date ``date`` (index); one row per plot channel, each pair on one colour scale."""
    channels = metrics["plot_channel"].values
    mean = metrics["map_mean"].isel(start_date=date).values  # (source, channel, y, x)
    std = metrics["map_std"].isel(start_date=date).values
    fig, axes = _figure(4, dpi, nrows=len(channels), height=2.2)
    fig.subplots_adjust(left=0.01, right=0.97, bottom=0.02, top=0.86, wspace=0.05, hspace=0.2)
    axes = np.asarray(axes).reshape(len(channels), 4)
    titles = ("prior mean", "climatological mean", "prior std", "climatological std")
    for row, c in enumerate(range(len(channels))):
        for pair, (field, cmap) in enumerate(((mean, "viridis"), (std, "magma"))):
            values = field[:, c]  # (prior, climatology): one colour scale
            finite = values[np.isfinite(values)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            image = None
            for k in range(2):
                ax = axes[row, 2 * pair + k]
                image = ax.imshow(values[k], origin="lower", cmap=cmap, vmin=lo, vmax=hi)
                ax.set_title(
                    f"{titles[2 * pair + k]}, channel {metrics['channel'].values[channels[c]]}",
                    fontsize=7,
                )
                ax.set_xticks([])
                ax.set_yticks([])
            cbar = fig.colorbar(
                image, ax=list(axes[row, 2 * pair : 2 * pair + 2]), shrink=0.85, pad=0.01
            )
            cbar.ax.tick_params(labelsize=6)
    start = metrics["start_date"].values[date]
    valid = np.datetime64(start, "h") + np.timedelta64(int(metrics.attrs["map_lead"]), "h")
    fig.suptitle(
        f"{metrics.attrs['group']}: start {date_label(start)}, valid {date_label(valid)} (lead "
        f"{metrics.attrs['map_lead']} h); {int(metrics.attrs['members'])} members",
        fontsize=9,
    )
    return _save(fig, path, outside=False)


def plot_autocorrelation(metrics: Any, path: Path, dpi: int = 80) -> Path:
    """Lag correlation (channel mean) and the mean squared increment by lead, seams marked."""
    fig, (left, right) = _figure(2, dpi)
    lag = metrics["lag"].values
    acf = metrics["acf"].mean("channel")
    left.plot(
        lag,
        acf.sel(sample="archive", pairs="all"),
        color=_TRUTH,
        marker="o",
        ms=3,
        label="archive",
    )
    left.plot(
        lag,
        acf.sel(sample="prior", pairs="all"),
        color=_PRIOR,
        marker="o",
        ms=3,
        label="prior, all pairs",
    )
    left.plot(
        lag,
        acf.sel(sample="prior", pairs="inside"),
        color="tab:green",
        ls="--",
        label="prior, inside blankets",
    )
    left.plot(
        lag,
        acf.sel(sample="prior", pairs="across"),
        color="tab:red",
        ls=":",
        label="prior, across seams",
    )
    K = int(metrics.attrs["blanket_size"])
    left.axvline(K, color="tab:purple", lw=0.8, ls="-.", label=f"blanket length K = {K}")
    left.set_xlabel("lag (states)", fontsize=8)
    left.set_ylabel("autocorrelation", fontsize=8)
    lead = metrics["lead"].values
    inc = metrics["increment_by_lead"].mean("channel")
    right.plot(lead, inc.sel(sample="archive"), color=_TRUTH, lw=1, label="archive")
    right.plot(lead, inc.sel(sample="prior"), color=_PRIOR, lw=1.2, label="prior")
    _seams(right, list(metrics.attrs.get("seam_leads", [])))
    right.set_xlabel("lead (h)", fontsize=8)
    right.set_ylabel("mean squared 1-step increment", fontsize=8)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{metrics.attrs['group']}: autocorrelation and seams", fontsize=9)
    _legend_below(fig, (left, right), ncol=4)
    return _save(fig, path)


def plot_skill(metrics: Any, path: Path, dpi: int = 80) -> Path:
    """RMSE/spread and fair CRPS by lead (channel mean); std by lead against the climatology."""
    fig, (left, middle, right) = _figure(3, dpi)
    lead = metrics["lead"].values
    colours = {"prior": _PRIOR, "climatology": _CLIM, "persistence": _PERSIST}
    for source, colour in colours.items():
        m = metrics.sel(source=source)
        left.plot(
            lead, np.sqrt((m["rmse"] ** 2).mean("channel")), color=colour, label=f"{source} RMSE"
        )
        if source != "persistence":
            left.plot(
                lead,
                np.sqrt((m["spread"] ** 2).mean("channel")),
                color=colour,
                ls="--",
                label=f"{source} spread",
            )
        middle.plot(lead, m["fair_crps"].mean("channel"), color=colour, label=source)
    left.set_title("skill (RMSE) and spread", fontsize=8)
    middle.set_title("fair CRPS", fontsize=8)
    std = metrics["std_by_lead"].sel(sample="prior").mean("channel")
    right.plot(lead, std, color=_PRIOR, label="prior")
    right.plot(
        lead,
        metrics["std_by_lead"].sel(sample="archive").mean("channel"),
        color=_CLIM,
        label="archive members",
    )
    right.plot(
        lead,
        metrics["clim_std_by_lead"].mean("channel"),
        color=_TRUTH,
        ls="--",
        label="climatology",
    )
    _seams(right, list(metrics.attrs.get("seam_leads", [])))
    right.set_title("std about the climatological mean", fontsize=8)
    fig.suptitle(f"{metrics.attrs['group']}: skill and spread by lead", fontsize=9)
    fig.tight_layout()
    for ax in (left, middle, right):
        ax.set_xlabel("lead (h)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(
            fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False
        )
    return _save(fig, path)


def plot_spectra(metrics: Any, path: Path, dpi: int = 80) -> Path:
    """Zonal spectra of the anomalies, prior against archive, for up to 4 channels."""
    fig, (ax,) = _figure(1, dpi)
    k = metrics["wavenumber"].values[1:]
    channels = metrics["channel"].values[:4]
    for i, c in enumerate(channels):
        colour = f"C{i}"
        ax.loglog(
            k, metrics["spectrum"].sel(sample="archive").values[i, 1:], color=colour, ls="--", lw=1
        )
        ax.loglog(
            k,
            metrics["spectrum"].sel(sample="prior").values[i, 1:],
            color=colour,
            lw=1.2,
            label=f"channel {c}",
        )
    ax.plot([], [], color="k", ls="--", label="archive")
    ax.plot([], [], color="k", label="prior")
    ax.set_xlabel("zonal wavenumber", fontsize=8)
    ax.set_ylabel("power", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.suptitle(f"{metrics.attrs['group']}: zonal spectra", fontsize=9)
    fig.tight_layout()
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return _save(fig, path)


def plot_ranks(
    histogram: np.ndarray, channels: list[str], group: str, path: Path, dpi: int = 80
) -> Path:
    """Rank histograms ``(C, M + 1)`` (fractions) per channel, the flat expectation
    ``1/(M+1)`` drawn; the title gives the two extreme bins against ``2/(M+1)``."""
    C, bins = histogram.shape
    M = bins - 1
    ncols = min(C, 4)
    nrows = -(-C // ncols)
    fig, axes = _figure(ncols, dpi, nrows=nrows, height=2.6)
    axes = np.asarray(axes).reshape(nrows, ncols)
    ranks = np.arange(bins)
    for c, ax in enumerate(axes.ravel()):
        if c >= C:
            ax.set_visible(False)
            continue
        ax.bar(ranks, histogram[c], width=0.9, color=_PRIOR, label="archive windows")
        ax.axhline(1 / bins, color=_TRUTH, ls="--", lw=1, label=f"uniform 1/(M+1), M = {M}")
        extreme = histogram[c, 0] + histogram[c, -1]
        ax.set_title(
            f"channel {channels[c]}: extreme bins {extreme:.3f} (expected {2 / bins:.3f})",
            fontsize=7,
        )
        ax.set_xlabel("rank among the model's blankets", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("fraction", fontsize=7)
    fig.suptitle(
        f"{group}: rank of the archive's value (seasonal drift removed) among {M} blankets",
        fontsize=9,
    )
    _legend_below(fig, axes, ncol=2)
    return _save(fig, path)
