"""Stand-in for ``appa.diffusion``: Appa's factory signature and call convention, a small net."""

from __future__ import annotations

import json
import os
import socket

import torch
from omegaconf import DictConfig, open_dict
from torch import nn


class Denoiser(nn.Module):
    """EDM preconditioning around ``backbone``, as Appa writes it (for the equality tests)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, xt, sigma_t, **kwargs):
        c_skip = 1 / (sigma_t**2 + 1)
        c_out = sigma_t / torch.sqrt(sigma_t**2 + 1)
        c_in = 1 / torch.sqrt(sigma_t**2 + 1)
        c_noise = (1e1 * torch.log(sigma_t)).squeeze(dim=-1)
        return c_skip * xt + c_out * self.backbone(c_in * xt, c_noise, **kwargs)


class ViDiT(nn.Module):
    """A small network over flattened blankets of ``(H W, C)`` states (``K`` of them).

    ``x (n, K * H * W * C)`` -> ``(n, K, C, H, W)`` -> conv over ``K C`` channels with noise and
    hour-of-day embeddings -> back. Its first and last weights have ``K C`` channels, so a
    checkpoint trained with another ``K`` does not fit.
    """

    def __init__(self, in_channels, shape, blanket_size, hid_channels=8, checkpointing=False, **_):
        super().__init__()
        self.shape, self.channels, self.blanket_size = tuple(shape), in_channels, blanket_size
        width = blanket_size * in_channels
        self.encode = nn.Conv2d(width, hid_channels, 3, padding=1)
        self.noise = nn.Linear(1, hid_channels)
        self.hour = nn.Linear(2, hid_channels)
        self.decode = nn.Conv2d(hid_channels, width, 3, padding=1)
        self.checkpointing = checkpointing

    def forward(self, x, c_noise, date):
        n = x.shape[0]
        (h, w), c, k = self.shape, self.channels, self.blanket_size
        grid = x.reshape(n, k, h, w, c).permute(0, 1, 4, 2, 3).reshape(n, k * c, h, w)
        angle = date[:, 0, 3].to(x.dtype) * (2 * torch.pi / 24)
        embedding = self.noise(c_noise.reshape(n, 1).to(x.dtype) / 10)
        embedding = embedding + self.hour(torch.stack([angle.sin(), angle.cos()], dim=-1))
        hidden = torch.nn.functional.silu(self.encode(grid) + embedding[:, :, None, None])
        out = self.decode(hidden).reshape(n, k, c, h, w).permute(0, 1, 3, 4, 2)
        return out.reshape(n, -1)


def _record(**fields):
    log = os.environ.get("APPA_STANDIN_LOG")
    if log:
        fields.update(
            pid=os.getpid(), host=socket.gethostname(), slurm=os.environ.get("SLURM_JOB_ID")
        )
        with open(log, "a") as handle:
            handle.write(json.dumps(fields) + "\n")


def create_denoiser(
    diffusion_cfg: DictConfig,
    ae_cfg: DictConfig,
    distributed: bool = False,
    device: str = "cuda",
    overrides: dict | None = None,
):
    """Appa's factory signature; builds the ``vit`` backbone (a ``graphdit`` is not stood in)."""
    if not isinstance(diffusion_cfg, DictConfig) or not isinstance(ae_cfg, DictConfig):
        raise TypeError("create_denoiser takes OmegaConf DictConfigs")
    denoiser_cfg = diffusion_cfg.backbone
    if overrides:
        with open_dict(denoiser_cfg):
            for key in overrides:
                denoiser_cfg[key] = overrides[key]
    _record(name=denoiser_cfg.name, device=str(device), overrides=dict(overrides or {}))
    if "vit" not in denoiser_cfg.name:
        raise NotImplementedError(f"Unknown denoiser type with name {denoiser_cfg.name}")
    height, width, channels = ae_cfg.ae.latent_shape
    settings = {k: v for k, v in denoiser_cfg.items() if k != "name"}
    net = ViDiT(
        in_channels=channels,
        shape=(height, width),
        blanket_size=diffusion_cfg.train.blanket_size,
        **settings,
    ).to(device)
    return Denoiser(net).to(device)
