"""A complete Appa tree in a folder, as Appa writes it, for the tests of Appa laps.

``<root>/ae/config.yaml``, ``<root>/ae/latents/dump/era5.h5`` (hourly latents of March to May
2000, raw: channel means and stds far from 0 and 1) with ``stats.pth``, and the lap
``<root>/ae/latents/dump/denoisers/run/lap`` (``config.yaml``, ``model_best.pth``,
``model_last.pth``) of the stand-in ``appa`` package's ``vit`` backbone (``tests/appa_standin``).
:func:`wrapped_model_dir` copies the same backbone into a priorflow model directory.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

STANDIN = Path(__file__).parent / "appa_standin"
LATENT_SHAPE = (4, 8, 3)  # the autoencoder's (H, W, C); states are (H W, C)
STATE = (32, 3)
MEAN = np.array([10.0, -5.0, 2.0])
STD = np.array([3.0, 0.5, 1.5])
LAP_CONFIG = {
    "train": {
        "blanket_size": 8,
        "blanket_dt": 1,
        "noise_schedule": "rectified",
        "sigma_min": 0.001,
        "sigma_max": 1000.0,
        "precision": "float16",
        "standardize": True,
    },
    "valid": {"denoising_steps": 16},
    "latent_data": "era5.h5",
    "ae_run": "ae",
    "latent_dump": "dump",
    "backbone": {"name": "vit_small", "hid_channels": 8},
}


def lap_folder(root: Path) -> Path:
    return root / "ae" / "latents" / "dump" / "denoisers" / "run" / "lap"


def standin_network(blanket_size: int = 8, seed: int = 0) -> torch.nn.Module:
    """The stand-in backbone as Appa's factory builds it for the lap (seeded weights)."""
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))
    from appa.diffusion import ViDiT

    torch.manual_seed(seed)
    return ViDiT(
        in_channels=LATENT_SHAPE[2],
        shape=LATENT_SHAPE[:2],
        blanket_size=blanket_size,
        hid_channels=LAP_CONFIG["backbone"]["hid_channels"],
    )


def write_archive(dump: Path, start: str = "2000-03-01", end: str = "2000-06-01") -> Path:
    """``era5.h5`` (latents, dates) and ``stats.pth`` in ``dump``: an AR(1) in time per value."""
    import h5py

    times = np.arange(np.datetime64(start, "h"), np.datetime64(end, "h"))
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((len(times), *STATE))
    anomaly = np.empty_like(noise)
    anomaly[0] = noise[0]
    for i in range(1, len(times)):
        anomaly[i] = 0.9 * anomaly[i - 1] + np.sqrt(1 - 0.81) * noise[i]
    latents = (MEAN + STD * anomaly).astype(np.float32)
    dates = np.stack(
        [
            times.astype("datetime64[Y]").astype(int) + 1970,
            times.astype("datetime64[M]").astype(int) % 12 + 1,
            (times.astype("datetime64[D]") - times.astype("datetime64[M]")).astype(int) + 1,
            (times - times.astype("datetime64[D]")).astype(int),
        ],
        axis=1,
    )
    dump.mkdir(parents=True, exist_ok=True)
    with h5py.File(dump / "era5.h5", "w") as file:
        file.create_dataset("latents", data=latents)
        file.create_dataset("dates", data=dates)
    flat = latents.reshape(-1, STATE[-1]).astype(np.float64)
    stats = {"mean": torch.tensor(flat.mean(0)), "std": torch.tensor(flat.std(0))}
    torch.save(stats, dump / "stats.pth")
    return dump / "era5.h5"


def write_appa_tree(root: Path, **train_changes: object) -> Path:
    """The whole tree under ``root``; returns the lap folder."""
    ae = root / "ae"
    ae.mkdir(parents=True, exist_ok=True)
    ae_config = {
        "name": "ae",
        "ae": {"name": "cae_small", "latent_shape": list(LATENT_SHAPE), "latent_channels": 3},
    }
    (ae / "config.yaml").write_text(yaml.safe_dump(ae_config))
    write_archive(ae / "latents" / "dump")
    lap = lap_folder(root)
    lap.mkdir(parents=True)
    config = {**LAP_CONFIG, "train": {**LAP_CONFIG["train"], **train_changes}}
    (lap / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(standin_network(seed=0).state_dict(), lap / "model_best.pth")
    torch.save(standin_network(seed=1).state_dict(), lap / "model_last.pth")
    return lap


def wrapped_model_dir(lap: Path, out: Path) -> Path:
    """The lap's backbone as a priorflow model directory (card + ``model_best.pt``)."""
    train = LAP_CONFIG["train"]
    card = {
        "backbone": {
            "target": "appa_priorflow:WrappedViDiT",
            "kwargs": {
                "in_channels": LATENT_SHAPE[2],
                "shape": list(LATENT_SHAPE[:2]),
                "blanket_size": train["blanket_size"],
                "hid_channels": LAP_CONFIG["backbone"]["hid_channels"],
                "checkpointing": True,
            },
        },
        "blanket_size": train["blanket_size"],
        "dt_hours": train["blanket_dt"],
        "state_shape": list(STATE),
        "schedule": {"name": "rectified", "sigma_min": 0.001, "sigma_max": 1000.0},
        "denoising_steps": LAP_CONFIG["valid"]["denoising_steps"],
        "precision": train["precision"],
        "archive": str(lap.parents[2] / "era5.h5"),
    }
    out.mkdir(parents=True)
    (out / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    shutil.copy(lap / "model_best.pth", out / "model_best.pt")
    shutil.copy(lap / "model_last.pth", out / "model_last.pt")
    return out


def seed_config(path: Path, model_path: Path, hardware: dict | None = None) -> Path:
    """``configs/example.yaml`` (the seed's YAML) with only ``model_path`` and ``hardware`` changed
    (runs then go to ``runs`` beside the written config)."""
    example = Path(__file__).parents[1] / "configs" / "example.yaml"
    data = yaml.safe_load(example.read_text())
    data["model_path"] = str(model_path)
    data.pop("output_dir", None)  # this repository's addition: the seed's YAML names none
    data["hardware"] = (
        hardware if hardware is not None else {**data["hardware"], "backend": "local"}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
