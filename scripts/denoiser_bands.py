r"""Where a trained denoiser departs from the exact one of its synthetic world, per noise level.

For archive blankets :math:`x` (validation days), noise :math:`x_\sigma = x + \sigma z` and the
world's mean :math:`m` at their dates, the deviations :math:`d = D(x_\sigma, \sigma) - m` of the
model and of the exact denoiser (:mod:`priorflow.models.exact`, the world rebuilt from the card's
``metadata.archive_world``) are split into a slow part (the blanket's mean over its ``K``
states) and a fast part (the rest), and each into zonal wavenumber bands. Each cell is

.. math::
    r = \frac{\sum_{\text{band}} |\hat d_{\text{model}}|^2}{\sum_{\text{band}} |\hat d_{\text{exact}}|^2},

the power the model keeps relative to what the exact posterior mean keeps: 1 is right, below 1
the model shrinks that part too much (its samples lack that variance), above 1 it lets noise
through (its samples have too much). It is a one-minute proxy of the learned verdict
(docs/check.md) that needs no sampling: a slow large-scale ratio below 1 at sigma 1-10 shows as
too little variance and too low a lag-1 correlation; a fast Nyquist ratio above 1 at sigma
0.1-1 as excess power at the Nyquist wavenumber. Use it to compare checkpoints during training.

Usage (from the repository root)::

    .venv/bin/python scripts/denoiser_bands.py models/reference [--target last] [--blankets 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from priorflow.core.denoiser import PreconditionedDenoiser  # noqa: E402
from priorflow.data.synthetic import SyntheticWorld  # noqa: E402
from priorflow.data.synthetic_archive import synthetic_archive_spec  # noqa: E402
from priorflow.models.exact import exact_backbone  # noqa: E402
from priorflow.models.loading import Model, load_model  # noqa: E402
from priorflow.models.training_data import Batches, TrainingData, blanket_split  # noqa: E402
from priorflow.plan import card_archive_path  # noqa: E402

SIGMAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def zonal_bands(width: int) -> dict[str, tuple[int, int]]:
    """Zonal wavenumber bands ``k0-3, k4-7, ...`` doubling up to the Nyquist wavenumber alone."""
    nyquist = width // 2
    bands, low, high = {}, 0, 4
    while low < nyquist:
        high = min(high, nyquist)
        bands[f"k{low}-{high - 1}"] = (low, high)
        low, high = high, 2 * high
    bands[f"k{nyquist}"] = (nyquist, nyquist + 1)
    return bands


def world_of(model: Model) -> SyntheticWorld:
    """The synthetic world the card records (``metadata.archive_world`` of a trained model,
    ``metadata.world`` of an exact one); a one-line error for any other model."""
    spec = synthetic_archive_spec(model.card.metadata)
    if spec is None:
        raise SystemExit(
            f"model: {model.path} records no synthetic world (metadata.archive_world); this"
            " diagnostic needs a model trained on a synthetic archive (priorflow archive synth)"
        )
    return SyntheticWorld(**spec["world"])


def held_out_every(model: Model) -> int:
    """Every how many days the model's training held a day out (``metadata.val_every_days`` of a
    trained card; 10, the training default, for a card that records none, as an exact model's):
    the blankets judged here come from those days, which the model never trained on."""
    value = model.card.metadata.get("val_every_days", 10)
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise SystemExit(
            f"model: {model.path} records val_every_days {value!r} in its card's metadata, not"
            " an integer of 2 or more; fix the card or retrain"
        )
    return value


@torch.no_grad()
def band_power_ratios(
    model: Model,
    archive: str | Path,
    *,
    sigmas: tuple[float, ...] = SIGMAS,
    blankets: int = 64,
    seed: int = 0,
    world: SyntheticWorld | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """``{(band, "slow" | "fast"): ratios over sigmas}`` (module docstring).

    ``world``: the exact denoiser's world (default: the card's, the one the model should have
    learned, :func:`world_of`).
    """
    world = world or world_of(model)
    size, dt = model.card.blanket_size, model.dt_hours
    data = TrainingData.from_archive(archive)
    split = blanket_split(data.times, data.dt_hours, size, dt, held_out_every(model))
    batches = Batches(data, size, split.stride, torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    starts = split.val[torch.randperm(len(split.val), generator=generator)[:blankets]]
    x, dates = batches(starts)
    index = starts[:, None].numpy() + split.stride * np.arange(size)
    mean = torch.from_numpy(world.mean(np.asarray(data.times)[index].ravel()))
    mean = mean.reshape(x.shape).float()
    kwargs = {k: v for k, v in world.kwargs.items() if k != "shape"}
    exact = PreconditionedDenoiser(exact_backbone(model.card.state_shape, **kwargs)).eval()
    trained = model.denoiser()
    bands = zonal_bands(x.shape[-1])
    ratios: dict[tuple[str, str], list[float]] = {}
    for sigma in sigmas:
        z = torch.randn(x.shape, generator=generator)
        noisy, level = x + sigma * z, torch.full((len(x),), sigma)
        exact_dev = exact(noisy, level, dates) - mean
        model_dev = trained(noisy, level, dates) - mean
        for part in ("slow", "fast"):
            pair = []
            for dev in (exact_dev, model_dev):
                slow = dev.mean(dim=1, keepdim=True)
                pair.append(torch.fft.rfft(slow if part == "slow" else dev - slow, dim=-1))
            for name, (low, high) in bands.items():
                power_exact = pair[0][..., low:high].abs().square().sum()
                power_model = pair[1][..., low:high].abs().square().sum()
                ratios.setdefault((name, part), []).append(float(power_model / power_exact))
    return {key: np.asarray(values) for key, values in ratios.items()}


def table(ratios: dict[tuple[str, str], np.ndarray], sigmas: tuple[float, ...] = SIGMAS) -> str:
    """The ratios as a markdown table, one row per band and part, one column per sigma."""
    head = "| band | part | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |"
    rows = [head, "|---|---|" + "---|" * len(sigmas)]
    for part in ("slow", "fast"):
        for (band, p), values in ratios.items():
            if p == part:
                rows.append(
                    f"| {band} | {part} | " + " | ".join(f"{v:.3f}" for v in values) + " |"
                )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model directory (trained on a synthetic archive)")
    parser.add_argument("--target", default="best", help="checkpoint: best or last")
    parser.add_argument("--archive", help="the archive (default: the card's)")
    parser.add_argument("--blankets", type=int, default=64, help="validation blankets")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.target)
    archive = args.archive or card_archive_path(str(model.path), model.card.archive)
    if archive is None:
        raise SystemExit("archive: the card names none; give --archive")
    print(table(band_power_ratios(model, archive, blankets=args.blankets)))


if __name__ == "__main__":
    main()
