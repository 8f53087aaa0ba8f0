r"""Appa lap folders as models: the card read from the lap's config, the backbone from Appa.

Appa trains a denoiser in a *lap* folder of its latent dump::

    <ae_run>/config.yaml                                     autoencoder config (ae.latent_shape)
    <ae_run>/latents/<dump>/<latent_data>                    HDF5 latent archive (era5.h5)
    <ae_run>/latents/<dump>/stats.pth                        per-channel mean and std
    <ae_run>/latents/<dump>/denoisers/<run>/<lap>/config.yaml     the denoiser's training config
    <ae_run>/latents/<dump>/denoisers/<run>/<lap>/model_best.pth  backbone state dict
    <ae_run>/latents/<dump>/denoisers/<run>/<lap>/model_last.pth

:func:`lap_card` reads the card priorflow needs from the lap's ``config.yaml``: ``K =
train.blanket_size``, ``dt = train.blanket_dt``, the schedule (``train.noise_schedule``,
``sigma_min``, ``sigma_max``), the default steps (``valid.denoising_steps``) and the training
precision (``train.precision``); the state shape is the archive's rows. No code from the lap
runs: the backbone is built by the installed ``appa`` package's own factory,
``appa.diffusion.create_denoiser(diffusion_cfg, ae_cfg, ...).backbone``, with the lap's and the
autoencoder's configs as OmegaConf DictConfigs, as Appa's generation does.

Appa's backbone takes a flattened blanket; :class:`AppaBackbone` gives it priorflow's call

.. math:: F(x, c_{noise}, dates) = \mathrm{unflatten}(F_{appa}(\mathrm{flatten}(x), c_{noise},
          date=dates)),

with ``x`` of shape ``(n, K, *S)`` flattened to ``(n, K D)`` state by state (``D = prod S``), as
Appa's trajectory denoiser unfolds a trajectory. The preconditioning around it is the same in
both (docs/models.md), so a lap samples in priorflow exactly as in Appa.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from priorflow.errors import ModelError
from priorflow.models.card import CARD_NAME, BackboneSpec, ModelCard, ScheduleSpec, one_line
from priorflow.safe_yaml import YAMLRefused, load_yaml

LAP_CONFIG = "config.yaml"
#: The checkpoint file of each ``model_target`` in a lap folder.
LAP_CHECKPOINTS: dict[str, str] = {"best": "model_best.pth", "last": "model_last.pth"}
DEFAULT_LATENT_DATA = "era5.h5"
#: What a lap's card names as its backbone: built by the installed Appa package, never by a path.
APPA_FACTORY = "appa.diffusion:create_denoiser"
#: Appa's generation builds the backbone with these overrides of its settings.
GENERATION_OVERRIDES = {"checkpointing": True}
INSTALL_HINT = (
    "install Appa from its repository (pip install -e <appa checkout>) and priorflow's extra"
    " (pip install 'priorflow[appa]')"
)
_PRECISIONS = {
    None: "float32",
    "float32": "float32",
    "fp32": "float32",
    "32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def is_lap(path: Path) -> bool:
    """Whether ``path`` is an Appa lap folder: a ``config.yaml`` and a ``model_*.pth``, no card."""
    return (
        path.is_dir()
        and (path / LAP_CONFIG).is_file()
        and not (path / CARD_NAME).exists()
        and any((path / name).is_file() for name in LAP_CHECKPOINTS.values())
    )


def _read_yaml(file: Path, what: str) -> dict[str, Any]:
    try:
        data = load_yaml(file.read_text())
    except (YAMLRefused, ValueError, OSError) as error:
        raise ModelError(
            f"{what} {file}: not readable YAML ({one_line(error)}); fix the file"
        ) from None
    except Exception as error:  # yaml.YAMLError
        raise ModelError(
            f"{what} {file}: not valid YAML ({one_line(getattr(error, 'problem', error))})"
        ) from None
    if not isinstance(data, dict):
        raise ModelError(f"{what} {file}: expected a mapping, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class AppaLap:
    """An Appa lap folder and its training config (``config.yaml``, plain YAML)."""

    path: Path
    config: dict[str, Any]

    @property
    def dump(self) -> Path:
        """The latent dump folder: ``<lap>/../../..``."""
        return self.path.parents[2]

    @property
    def ae_config_file(self) -> Path:
        """The autoencoder's ``config.yaml``: ``<lap>/../../../../../config.yaml``."""
        return self.path.parents[4] / LAP_CONFIG

    @property
    def latent_data(self) -> str:
        return str(self.config.get("latent_data") or DEFAULT_LATENT_DATA)

    @property
    def archive_path(self) -> Path:
        """The dump's latent archive (``latent_data``, default ``era5.h5``)."""
        return self.dump / self.latent_data

    @property
    def standardize(self) -> bool:
        """Whether training standardized the latents with the dump's ``stats.pth``."""
        return bool(self.section("train").get("standardize", True))

    def section(self, name: str) -> dict[str, Any]:
        value = self.config.get(name)
        if not isinstance(value, dict):
            raise ModelError(
                f"model_path: Appa lap {self.path}: {LAP_CONFIG} has no '{name}' section; is it"
                " the config Appa saved with the lap?"
            )
        return value

    def value(self, section: str, key: str) -> Any:
        """``config[section][key]``; one line naming the dotted key when it is missing."""
        values = self.section(section)
        if values.get(key) is None:
            raise ModelError(
                f"model_path: Appa lap {self.path}: {LAP_CONFIG} has no {section}.{key}; Appa"
                " writes it with every lap"
            )
        return values[key]

    def ae_config(self) -> dict[str, Any]:
        """The autoencoder's config (Appa's factory reads ``ae.latent_shape`` and friends)."""
        file = self.ae_config_file
        if not file.is_file():
            raise ModelError(
                f"model_path: the autoencoder config {file} of Appa lap {self.path} is missing;"
                " a lap sits at <ae_run>/latents/<dump>/denoisers/<run>/<lap>, beside"
                " <ae_run>/config.yaml"
            )
        return _read_yaml(file, "autoencoder config")


def read_lap(path: str | Path) -> AppaLap:
    """The Appa lap folder ``path`` with its ``config.yaml`` read (nothing is imported)."""
    path = Path(path).expanduser().resolve()
    if len(path.parents) < 5:
        raise ModelError(
            f"model_path: Appa lap {path} is not inside <ae_run>/latents/<dump>/denoisers/<run>/;"
            " point model_path at the lap folder where Appa wrote it"
        )
    return AppaLap(path, _read_yaml(path / LAP_CONFIG, "Appa lap config"))


def _int(lap: AppaLap, section: str, key: str, low: int, high: int) -> int:
    value = lap.value(section, key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelError(
            f"model_path: Appa lap {lap.path}: {section}.{key} is {value!r}; it must be an integer"
            f" from {low} to {high}"
        )
    return value


def lap_precision(lap: AppaLap) -> str:
    """The training precision (``train.precision``; none given means float32)."""
    value = lap.section("train").get("precision")
    key = None if value is None else str(value).lower()
    if key not in _PRECISIONS:
        raise ModelError(
            f"model_path: Appa lap {lap.path}: train.precision is {value!r}, not a precision"
            " priorflow samples in (float32, float16, bfloat16); set precision: in the run config"
        )
    return _PRECISIONS[key]


def lap_state_shape(lap: AppaLap) -> tuple[int, ...]:
    """One state's shape: the archive's rows, else Appa's rule on ``ae.latent_shape``.

    Appa's generation flattens a 3-d ``(H, W, C)`` latent shape to ``(H W, C)``.
    """
    if lap.archive_path.is_file():
        from priorflow.data.appa_archive import hdf5_state_shape

        return hdf5_state_shape(lap.archive_path)
    shape = (lap.ae_config().get("ae") or {}).get("latent_shape")
    if isinstance(shape, list) and shape and all(isinstance(n, int) and n > 0 for n in shape):
        return (shape[0] * shape[1], shape[2]) if len(shape) == 3 else tuple(shape)
    raise ModelError(
        f"model_path: Appa lap {lap.path}: its latent archive {lap.archive_path} (latent_data)"
        " is missing and the autoencoder config gives no ae.latent_shape; put the archive in"
        " the dump folder"
    )


def lap_card(lap: AppaLap) -> ModelCard:
    """The card of an Appa lap, from its ``config.yaml`` (see the module docstring)."""
    train = lap.section("train")
    try:
        schedule = ScheduleSpec(
            name=str(lap.value("train", "noise_schedule")),
            sigma_min=float(train.get("sigma_min", 1e-3)),
            sigma_max=float(train.get("sigma_max", 1e3)),
        )
    except (ValueError, TypeError) as error:
        problem = error.errors()[0]["msg"] if isinstance(error, ValidationError) else error
        raise ModelError(
            f"model_path: Appa lap {lap.path}: train.noise_schedule/sigma_min/sigma_max:"
            f" {one_line(problem).removeprefix('Value error, ')}"
        ) from None
    backbone = lap.config.get("backbone")
    digest = hashlib.sha256((lap.path / LAP_CONFIG).read_bytes()).hexdigest()
    try:
        return ModelCard(
            backbone=BackboneSpec(target=APPA_FACTORY),
            blanket_size=_int(lap, "train", "blanket_size", 1, 10_000),
            dt_hours=_int(lap, "train", "blanket_dt", 1, 24 * 366),
            state_shape=lap_state_shape(lap),
            schedule=schedule,
            denoising_steps=_int(lap, "valid", "denoising_steps", 1, 10_000),
            precision=lap_precision(lap),  # type: ignore[arg-type]
            archive=str(Path("..", "..", "..", lap.latent_data)),
            metadata={
                "format": "appa",
                "appa": {
                    "backbone": backbone if isinstance(backbone, dict) else None,
                    "standardize": lap.standardize,
                    "latent_data": lap.latent_data,
                    "config_sha256": digest,
                },
            },
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise ModelError(
            f"model_path: Appa lap {lap.path}: {'.'.join(map(str, first['loc']))}:"
            f" {one_line(first['msg'])}"
        ) from None


def card_standardizes(metadata: Mapping[str, Any]) -> bool:
    """Whether a model with this card ``metadata`` sees an HDF5 archive standardized with its
    ``stats.pth``: yes, unless it is an Appa lap trained with ``train.standardize: false``."""
    appa = metadata.get("appa") if metadata.get("format") == "appa" else None
    return bool(appa.get("standardize", True)) if isinstance(appa, dict) else True


class AppaBackbone(nn.Module):
    """Appa's backbone with priorflow's call: ``(n, K, *S)`` blankets in and out.

    ``network`` is what ``create_denoiser(...).backbone`` built; it is called as Appa calls it,
    ``network(x (n, K D), c_noise (n,), date=dates (n, K, 4)) -> (n, K D)``. The checkpoint is
    the network's state dict (:attr:`network`).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], math.prod(x.shape[1:]))
        return self.network(flat, c_noise, date=dates).reshape(x.shape)


def build_lap_network(lap: AppaLap, device: str | torch.device = "cpu") -> nn.Module:
    """Appa's backbone for the lap, untrained: ``create_denoiser(diffusion_cfg, ae_cfg).backbone``.

    Raises:
        ModelError: one line when ``appa`` or ``omegaconf`` is not installed, or the factory
            fails on the lap's settings.
    """
    try:
        from appa.diffusion import create_denoiser
    except ImportError as error:
        raise ModelError(
            f"model_path: {lap.path} is an Appa lap; its backbone is built by Appa's"
            f" appa.diffusion.create_denoiser, which does not import ({one_line(error)});"
            f" {INSTALL_HINT}"
        ) from None
    try:
        from omegaconf import OmegaConf
    except ImportError:
        raise ModelError(
            f"model_path: {lap.path} is an Appa lap, and Appa's factory takes OmegaConf configs;"
            f" {INSTALL_HINT}"
        ) from None
    ae = lap.ae_config()
    ae.pop("name", None)  # as Appa's loader does
    try:
        denoiser = create_denoiser(
            OmegaConf.create(lap.config),
            OmegaConf.create(ae),
            distributed=False,
            device=str(device),
            overrides=dict(GENERATION_OVERRIDES),
        )
    except Exception as error:
        raise ModelError(
            f"model_path: Appa's create_denoiser refused lap {lap.path}:"
            f" {type(error).__name__}: {one_line(error)[:200]}"
        ) from None
    network = getattr(denoiser, "backbone", None)
    if not isinstance(network, nn.Module):
        raise ModelError(
            f"model_path: appa.diffusion.create_denoiser returned {type(denoiser).__name__}"
            " without an nn.Module .backbone; is the installed appa package Appa's?"
        )
    return network
