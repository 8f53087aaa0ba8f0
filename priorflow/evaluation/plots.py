"""The prior check's plots (matplotlib, Agg backend), drawn from one size's metrics dataset.

Four small PNGs per size (``<group>-<name>.png``): ``plumes`` (members of the first start date
at the middle point against the truth, climatology members and persistence, seams marked),
``autocorrelation`` (lag correlation of the prior and the archive, inside blankets and across
seams; mean squared one-step increment by lead with the seams marked), ``skill`` (RMSE, spread
and fair CRPS by lead for the prior and the baselines; std by lead against the climatology)
and ``spectra`` (zonal spectra of the prior and the archive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_group"]

_PRIOR = "tab:blue"
_CLIM = "tab:gray"
_PERSIST = "tab:orange"
_TRUTH = "black"


def _figure(ncols: int, dpi: int) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.0), dpi=dpi, squeeze=False)
    return fig, axes[0]


def _save(fig: Any, path: Path) -> Path:
    """Save as a small PNG: rendered by Agg, then reduced to a 64-colour palette (about a third of
    the bytes; the report embeds every PNG)."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        small.save(path, format="PNG", optimize=True)
    return path


def _seams(ax: Any, leads: list[int]) -> None:
    for i, lead in enumerate(leads):
        ax.axvline(
            lead, color="tab:red", lw=0.6, ls=":", alpha=0.7, label="seam" if i == 0 else None
        )


def plot_group(metrics: Any, directory: Path, dpi: int = 80) -> list[Path]:
    """Write the PNGs of one size into ``directory``; returns their paths."""
    group = str(metrics.attrs["group"])
    directory = Path(directory)
    paths = []
    if "plume_prior" in metrics:
        paths.append(plot_plumes(metrics, directory / f"{group}-plumes.png", dpi))
    paths.append(plot_autocorrelation(metrics, directory / f"{group}-autocorrelation.png", dpi))
    paths.append(plot_skill(metrics, directory / f"{group}-skill.png", dpi))
    if "spectrum" in metrics:
        paths.append(plot_spectra(metrics, directory / f"{group}-spectra.png", dpi))
    return paths


def plot_plumes(metrics: Any, path: Path, dpi: int = 80) -> Path:
    """Members of the first start date at the middle point, per plot channel."""
    channels = metrics["plot_channel"].values
    fig, axes = _figure(len(channels), dpi)
    lead = metrics["lead"].values
    for ax, c in zip(axes, range(len(channels)), strict=True):
        clim = metrics["plume_climatology"].values[:, :, c]
        prior = metrics["plume_prior"].values[:, :, c]
        for m in range(clim.shape[0]):
            ax.plot(
                lead,
                clim[m],
                color=_CLIM,
                lw=0.8,
                alpha=0.7,
                label="climatology" if m == 0 else None,
            )
        for m in range(prior.shape[0]):
            ax.plot(
                lead, prior[m], color=_PRIOR, lw=0.9, alpha=0.8, label="prior" if m == 0 else None
            )
        ax.plot(
            lead,
            metrics["plume_persistence"].values[:, c],
            color=_PERSIST,
            lw=1.2,
            ls="--",
            label="persistence",
        )
        ax.plot(lead, metrics["plume_truth"].values[:, c], color=_TRUTH, lw=1.4, label="truth")
        _seams(ax, list(metrics.attrs.get("seam_leads", [])))
        ax.set_title(
            f"channel {metrics['channel'].values[channels[c]]}, point {tuple(metrics.attrs.get('point', []))}",
            fontsize=8,
        )
        ax.set_xlabel("lead (h)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(
        f"{metrics.attrs['group']}: start {metrics.attrs.get('plume_start_date', '')}", fontsize=9
    )
    return _save(fig, path)


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
    left.set_xlabel("lag (states)", fontsize=8)
    left.set_ylabel("autocorrelation", fontsize=8)
    left.legend(fontsize=6)
    lead = metrics["lead"].values
    inc = metrics["increment_by_lead"].mean("channel")
    right.plot(lead, inc.sel(sample="archive"), color=_TRUTH, lw=1, label="archive")
    right.plot(lead, inc.sel(sample="prior"), color=_PRIOR, lw=1.2, label="prior")
    _seams(right, list(metrics.attrs.get("seam_leads", [])))
    right.set_xlabel("lead (h)", fontsize=8)
    right.set_ylabel("mean squared 1-step increment", fontsize=8)
    right.legend(fontsize=6)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{metrics.attrs['group']}: autocorrelation and seams", fontsize=9)
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
    for ax in (left, middle, right):
        ax.set_xlabel("lead (h)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(f"{metrics.attrs['group']}: skill and spread by lead", fontsize=9)
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
    ax.legend(fontsize=6)
    fig.suptitle(f"{metrics.attrs['group']}: zonal spectra", fontsize=9)
    return _save(fig, path)
