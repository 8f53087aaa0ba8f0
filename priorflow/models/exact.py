r"""The exact model of a synthetic world: its Gaussian posterior mean as a backbone.

:class:`ExactBackbone` returns, through the EDM preconditioning, exactly
:math:`E[x \mid x_\sigma]` of :class:`~priorflow.data.synthetic.SyntheticWorld` (see its
docstring), so a model directory written by :func:`write_exact_model` samples the world's true
prior and lets every statistic of the pipeline be checked against exact values.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from priorflow.atomic import staging_directory, write_file
from priorflow.core.dates import as_times, fields_to_times, hours_since_epoch
from priorflow.data.synthetic import DEFAULT_SHAPE, SyntheticWorld
from priorflow.errors import ConfigError, ModelError
from priorflow.models.card import CHECKPOINTS, ModelCard, write_card

EXACT_TARGET = "priorflow.models.exact:exact_backbone"

_CACHE_SIZE = 8


class GaussianPosterior:
    r"""The exact denoiser :math:`E[x \mid x_\sigma]` of a :class:`SyntheticWorld`'s blankets.

    The blanket terms (mean, eigenvalues and eigenvectors of :math:`T \otimes \Sigma_c`) are
    cached by dates and device; the cache may be shared by the threads of one worker.
    """

    def __init__(self, world: SyntheticWorld):
        self.world = world
        self._cache: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"world": self.world}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["world"])

    def _blanket_terms(
        self, dates: torch.Tensor | np.ndarray, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Mean ``(n, K, C, H, W)``, eigenvalues ``(n, K C)`` and eigenvectors ``(n, K C, K C)``
        of :math:`T \otimes \Sigma_c` for the blankets at ``dates`` (cached by dates)."""
        if isinstance(dates, torch.Tensor):
            times = fields_to_times(dates)
        else:
            dates = np.asarray(dates)
            times = as_times(dates) if dates.dtype.kind == "M" else fields_to_times(dates)
        key = (times.tobytes(), times.shape, str(device))
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        mean = torch.as_tensor(self.world.mean(times), dtype=torch.float64).to(device)
        hours = hours_since_epoch(times)
        pattern, inverse = np.unique(hours - hours[:, :1], axis=0, return_inverse=True)
        lags = np.abs(pattern[:, :, None] - pattern[:, None, :])
        lam_t, U = torch.linalg.eigh(torch.as_tensor(self.world.rho**lags, dtype=torch.float64))
        V = torch.as_tensor(self.world.channel_vectors)
        lam_c = torch.as_tensor(self.world.channel_values)
        p, K = lam_t.shape
        C = len(lam_c)
        Q = torch.einsum("pkj,cd->pkcjd", U, V).reshape(p, K * C, K * C)  # U kron V
        lam = (lam_t[:, :, None] * lam_c[None, None, :]).reshape(p, K * C)
        inverse = torch.as_tensor(inverse.reshape(-1))
        terms = (mean, lam[inverse].to(device), Q[inverse].contiguous().to(device))
        with self._lock:
            while len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = terms
        return terms

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor | float, dates: torch.Tensor | np.ndarray
    ) -> torch.Tensor:
        r"""Exact denoiser :math:`E[x \mid x_\sigma]` for blankets.

        Arguments:
            x: noisy blankets :math:`x_\sigma`, ``(n, K, C, H, W)``.
            sigma: noise levels, ``(n,)`` or a scalar.
            dates: ``(n, K, 4)`` ``(year, month, day, hour)`` fields, or ``datetime64`` ``(n, K)``.

        Returns:
            :math:`m + U \operatorname{diag}(\lambda / (\lambda + \sigma^2)) U^\top (x - m)`,
            float64 ``(n, K, C, H, W)`` on ``x``'s device: ``U`` is (eigenvectors of ``T``)
            kron (of :math:`\Sigma_c`), applied as one batched matrix product, times the
            Fourier modes, applied as an FFT pair.
        """
        if tuple(x.shape[2:]) != self.world.shape or x.dim() != 5:
            raise ValueError(
                f"exact denoiser: blankets of shape {tuple(x.shape)} do not match "
                f"(n, K, *{self.world.shape})"
            )
        x = x.to(torch.float64)
        n, K, C, H, W = x.shape
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(n)
        mean, lam_tc, Q = self._blanket_terms(dates, x.device)
        spectrum = self.world.device_tensors(x.device)["P"]
        lam = lam_tc[:, :, None, None] * spectrum
        gain = lam / (lam + sigma.reshape(-1, 1, 1, 1) ** 2)  # (n, K C, H, W // 2 + 1)
        y = torch.bmm(Q.transpose(1, 2), (x - mean).reshape(n, K * C, H * W))
        y = self.world.spectral_filter(y.reshape(n, K * C, H, W), gain)
        y = torch.bmm(Q, y.reshape(n, K * C, H * W))
        return mean + y.reshape(n, K, C, H, W)


class ExactBackbone(nn.Module):
    r"""A backbone ``F`` that makes :class:`~priorflow.core.denoiser.PreconditionedDenoiser` exact.

    Given :math:`c_{in} x_\sigma`, :math:`c_{noise} = 10 \log\sigma` and the dates, it returns
    :math:`F = (E[x \mid x_\sigma] - c_{skip} x_\sigma) / c_{out}`, computed in float64 (returned as
    float32), so that :math:`c_{skip} x_\sigma + c_{out} F` is the posterior mean.

    Its state dict holds one buffer, ``world_fingerprint`` (the world's defining numbers): loading
    a checkpoint written for another world (other seed or kwargs) fails.
    """

    def __init__(self, **world_kwargs: Any):
        super().__init__()
        self.world = SyntheticWorld(**world_kwargs)
        self.posterior_mean = GaussianPosterior(self.world)
        self.register_buffer(
            "world_fingerprint", torch.as_tensor(self.world.fingerprint(), dtype=torch.float64)
        )
        self.register_load_state_dict_post_hook(_check_fingerprint)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        """``(n, K, C, H, W)``, ``(n,)``, ``(n, K, 4)`` -> ``(n, K, C, H, W)`` float32."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            n = x.shape[0]
            c_noise = torch.as_tensor(c_noise, device=x.device).to(torch.float64).expand(n)
            sigma = torch.exp(c_noise / 10)
            shape = (-1,) + (1,) * (x.dim() - 1)
            s2 = (sigma**2).reshape(shape)
            x_sigma = x.to(torch.float64) * torch.sqrt(s2 + 1)
            d = self.posterior_mean(x_sigma, sigma, dates)
            c_out = sigma.reshape(shape) / torch.sqrt(s2 + 1)
            return ((d - x_sigma / (s2 + 1)) / c_out).to(torch.float32)


def _check_fingerprint(module: ExactBackbone, incompatible: Any) -> None:
    expected = torch.as_tensor(module.world.fingerprint(), dtype=torch.float64)
    loaded = module.world_fingerprint.detach().cpu()
    if loaded.shape != expected.shape or not torch.allclose(loaded, expected, rtol=1e-9):
        raise RuntimeError(
            "exact backbone: the checkpoint was written for a different synthetic world "
            "(its world_fingerprint differs); use the card kwargs it was written with"
        )


def exact_backbone(state_shape: Sequence[int] | None = None, **kwargs: Any) -> ExactBackbone:
    """Card target ``priorflow.models.exact:exact_backbone``: the exact backbone of the world
    ``SyntheticWorld(state_shape, **kwargs)``.

    ``state_shape`` (the card's, passed by :func:`priorflow.models.loading.build_backbone`) is the world's
    ``shape``; giving both, they must agree. A shape that is not ``(C, H, W)`` raises
    :class:`~priorflow.errors.ConfigError`.
    """
    shape = kwargs.pop("shape", None)
    if shape is not None and state_shape is not None and tuple(shape) != tuple(state_shape):
        raise ConfigError(
            f"exact backbone: shape {tuple(shape)} differs from state_shape {tuple(state_shape)}"
        )
    shape = state_shape if state_shape is not None else shape
    return ExactBackbone(shape=tuple(shape) if shape is not None else DEFAULT_SHAPE, **kwargs)


def write_exact_model(
    directory: str | os.PathLike,
    blanket_size: int = 8,
    dt_hours: int = 1,
    *,
    denoising_steps: int = 64,
    schedule: dict[str, Any] | None = None,
    archive: str | None = None,
    overwrite: bool = False,
    **world_kwargs: Any,
) -> Path:
    """Write a model directory for the exact denoiser of ``SyntheticWorld(**world_kwargs)``.

    Writes ``card.yaml`` (target ``priorflow.models.exact:exact_backbone``, the world's kwargs) and
    ``model_best.pt`` / ``model_last.pt`` (identical state dicts holding the world fingerprint),
    atomically: into a temporary directory next to ``directory``, then renamed. Returns the path.
    Raises :class:`ModelError` if ``directory`` exists and is not empty, unless ``overwrite``.
    """
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise ModelError(
            f"model: {directory} already exists and is not empty; choose another directory "
            "or pass overwrite=True"
        )
    backbone = exact_backbone(**world_kwargs)
    world = backbone.world
    kwargs = {k: v for k, v in world.kwargs.items() if k != "shape"}
    card = ModelCard(
        backbone={"target": EXACT_TARGET, "kwargs": kwargs},
        blanket_size=blanket_size,
        dt_hours=dt_hours,
        state_shape=world.shape,
        schedule=schedule or {},
        denoising_steps=denoising_steps,
        precision="float32",
        archive=archive,
        metadata={
            "kind": "exact",
            "description": "exact Gaussian posterior mean of the synthetic world (not trained)",
            "world": world.describe(),
        },
    )
    state = backbone.state_dict()
    with staging_directory(directory) as tmp:
        write_card(tmp, card)
        for name in CHECKPOINTS.values():
            write_file(tmp / name, lambda handle: torch.save(state, handle))
    return directory
