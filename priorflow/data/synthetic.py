r"""A synthetic latent world with exactly known statistics.

The world stands in for encoded, standardised weather. A state :math:`x(t)` has shape
``(C, H, W)`` (channels, latitude rows from north to south, longitude columns eastwards) and is

.. math::
    x(t) = m(t) + a(t), \qquad a \sim \mathcal{N}(0, \Sigma), \quad
    \operatorname{Cov}[a(t), a(t')] = \rho^{|t - t'|}\ \Sigma_c \otimes S ,

with ``t`` in hours:

- the mean :math:`m(t)` follows the season and the hour of day: per channel ``c``,
  :math:`m_c = A_c \sin(\text{lat}) \cos 2\pi(\tau - \phi_c) + B_c\, g(t) - \mu_c`, where
  :math:`\tau` is the year progress, :math:`g` a warm spot under the sun (its longitude follows
  the UTC hour, its latitude the solar declination) and :math:`\mu_c` the channel's climatological
  mean (so the archive has channel means near 0);
- the anomalies :math:`a` are a stationary Gaussian process: AR(1) in time (an
  Ornstein-Uhlenbeck process sampled at whole hours, lag correlation :math:`\rho^{\Delta t}`, about
  0.9 per hour), a smooth periodic random field in space with spectrum
  :math:`P(k) \propto (1 + \ell_y^2 k_y^2 + \ell_x^2 k_x^2)^{-\nu}` (unit variance, ``S`` is
  diagonal in the 2D Fourier basis), correlated across channels by :math:`\Sigma_c` (diagonal
  :math:`s_c^2`, chosen so that every channel's total variance is ``variance``, 1 by default).

The covariance of a blanket of ``K`` states is the Kronecker product
:math:`C_K = T \otimes \Sigma_c \otimes S` with :math:`T_{ij} = \rho^{|t_i - t_j|}`, so its
eigenbasis is (eigenvectors of ``T``) x (eigenvectors of :math:`\Sigma_c`) x (Fourier modes) and
the Gaussian posterior mean (the exact denoiser)

.. math::
    E[x \mid x_\sigma] = m + C_K (C_K + \sigma^2 I)^{-1} (x_\sigma - m)
    = m + U \operatorname{diag}\Big(\frac{\lambda}{\lambda + \sigma^2}\Big) U^\top (x_\sigma - m)

costs two small dense transforms and one FFT pair (:mod:`priorflow.models.exact`). Everything is
deterministic from ``seed``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from priorflow.core.dates import (
    as_times,
    hour_of_day,
    hours_since_epoch,
    year_progress,
)
from priorflow.errors import ConfigError

DEFAULT_SHAPE = (4, 16, 32)
# March equinox as a fraction of the year (day 80.5 of 365.25): the sun crosses the equator.
_EQUINOX = 80.5 / 365.25
_DECLINATION = math.radians(23.44)


# --------------------------------------------------------------------------------------------
# the world


class SyntheticWorld:
    r"""The synthetic latent world; see the module docstring for the model.

    Arguments:
        shape: state shape ``(C, H, W)``.
        seed: seeds the channel amplitudes, phases and cross-channel correlation.
        rho: anomaly correlation at a lag of one hour (``0 < rho < 1``).
        length_scale: spatial length scale in grid cells, one value or ``(l_y, l_x)``.
        smoothness: exponent :math:`\nu` of the spatial spectrum (larger is smoother).
        channel_mixing: strength of the cross-channel correlation in ``[0, 1)`` (0: independent).
        season_amplitude: range ``(lo, hi)`` of the seasonal amplitudes :math:`A_c`.
        diurnal_amplitude: range ``(lo, hi)`` of the warm-spot amplitudes :math:`B_c`.
        variance: total (climatological) variance of every channel.

    Every quantity is a float64 numpy array or tensor; states are ``(n, C, H, W)``.
    """

    def __init__(
        self,
        shape: Sequence[int] = DEFAULT_SHAPE,
        *,
        seed: int = 0,
        rho: float = 0.9,
        length_scale: float | Sequence[float] = 1.5,
        smoothness: float = 2.0,
        channel_mixing: float = 0.5,
        season_amplitude: Sequence[float] = (0.6, 1.0),
        diurnal_amplitude: Sequence[float] = (0.8, 1.4),
        variance: float = 1.0,
    ):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"synthetic world: shape {shape} is not (C, H, W) with sizes >= 1")
        if not 0 < rho < 1:
            raise ConfigError(f"synthetic world: rho={rho} must lie in (0, 1)")
        if not 0 <= channel_mixing < 1:
            raise ConfigError(
                f"synthetic world: channel_mixing={channel_mixing} must lie in [0, 1)"
            )
        if np.ndim(length_scale) == 0:
            length_scale = (float(length_scale), float(length_scale))
        self.shape = shape
        self.seed = int(seed)
        self.rho = float(rho)
        self.length_scale = tuple(float(v) for v in length_scale)
        self.smoothness = float(smoothness)
        self.channel_mixing = float(channel_mixing)
        self.season_range = tuple(float(v) for v in season_amplitude)
        self.diurnal_range = tuple(float(v) for v in diurnal_amplitude)
        self.variance = float(variance)

        C, H, W = shape
        rng = np.random.default_rng(self.seed)
        self.season_amp = rng.uniform(*self.season_range, size=C)
        self.season_phase = 0.55 + 0.05 * rng.standard_normal(C)  # peak in July in the north
        self.diurnal_amp = rng.uniform(*self.diurnal_range, size=C)
        mix = rng.standard_normal((C, C))
        m = (1 - self.channel_mixing) * np.eye(C) + self.channel_mixing * mix @ mix.T / C
        d = np.sqrt(np.diag(m))
        self.channel_correlation = m / d[:, None] / d[None, :]

        # grid: latitude of row centres (north to south), longitude of column centres (east)
        self.lat = np.radians(90 - 180 * (np.arange(H) + 0.5) / H)
        self.lon = 2 * np.pi * (np.arange(W) + 0.5) / W

        # spatial spectrum on the periodic grid, normalised to unit pointwise variance
        ky = 2 * np.pi * np.fft.fftfreq(H)[:, None]
        kx = 2 * np.pi * np.fft.fftfreq(W)[None, :]
        ly, lx = self.length_scale
        spectrum = (1 + (ly * ky) ** 2 + (lx * kx) ** 2) ** (-self.smoothness)
        self.spectrum = spectrum / spectrum.mean()  # (H, W)

        # climatological channel mean and variance of the raw mean field, then anomaly std
        self.offset = np.zeros(C)
        mu, var = self._mean_climatology()
        self.offset = mu
        self.mean_variance = var
        anomaly_var = self.variance - var
        if np.any(anomaly_var < 0.2 * self.variance):
            raise ConfigError(
                f"synthetic world: season/diurnal amplitudes leave too little anomaly variance "
                f"({anomaly_var.min():.3f} of {self.variance}); lower them"
            )
        self.channel_std = np.sqrt(anomaly_var)  # (C,)
        self.channel_covariance = (
            self.channel_std[:, None] * self.channel_correlation * self.channel_std[None, :]
        )
        values, vectors = np.linalg.eigh(self.channel_covariance)
        self.channel_values = values  # (C,)
        self.channel_vectors = vectors  # (C, C), columns are eigenvectors
        self._device_cache: dict[str, dict[str, torch.Tensor]] = {}
        self._lock = threading.Lock()  # the cache may be shared by threads of one worker

    def __getstate__(self) -> dict[str, Any]:
        # picklable and deep-copyable: drop the lock and the per-device caches
        state = dict(self.__dict__)
        state.update(_lock=None, _device_cache={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- description

    @property
    def kwargs(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this world exactly."""
        return {
            "shape": list(self.shape),
            "seed": self.seed,
            "rho": self.rho,
            "length_scale": list(self.length_scale),
            "smoothness": self.smoothness,
            "channel_mixing": self.channel_mixing,
            "season_amplitude": list(self.season_range),
            "diurnal_amplitude": list(self.diurnal_range),
            "variance": self.variance,
        }

    def describe(self) -> dict[str, Any]:
        """A JSON-able description: the model, its kwargs and its exact per-channel statistics."""
        return {
            "kind": "priorflow.data.synthetic.SyntheticWorld",
            "model": "x = m(season, hour) + a; a Gaussian, AR(1) in time (rho per hour), "
            "periodic smooth field in space, correlated across channels",
            "kwargs": self.kwargs,
            "anomaly_std": self.channel_std.tolist(),
            "mean_variance": self.mean_variance.tolist(),
            "lag1_correlation_per_hour": self.rho,
        }

    def fingerprint(self) -> np.ndarray:
        """The world's defining numbers, concatenated (float64): identifies it in checkpoints."""
        return np.concatenate(
            [
                self.channel_covariance.ravel(),
                self.spectrum.ravel(),
                self.season_amp,
                self.season_phase,
                self.diurnal_amp,
                self.offset,
                [self.rho],
            ]
        )

    # ---------------------------------------------------------------- exact statistics

    def _raw_mean(self, times: np.ndarray) -> np.ndarray:
        tau = year_progress(times)[:, None, None, None]  # (n, 1, 1, 1)
        hod = hour_of_day(times)[:, None, None]  # (n, 1, 1)
        lat = self.lat[None, :, None]
        lon = self.lon[None, None, :]
        season = (
            self.season_amp[None, :, None, None]
            * np.sin(lat)[:, None]
            * np.cos(2 * np.pi * (tau - self.season_phase[None, :, None, None]))
        )
        lon_sun = 2 * np.pi * (12 - hod) / 24
        lat_sun = _DECLINATION * np.sin(2 * np.pi * (tau[:, 0] - _EQUINOX))
        spot = np.exp(2.0 * (np.cos(lon - lon_sun) - 1)) * np.exp(
            -((lat - lat_sun) ** 2) / (2 * math.radians(30) ** 2)
        )  # (n, H, W)
        return season + self.diurnal_amp[None, :, None, None] * spot[:, None]

    def _mean_climatology(self) -> tuple[np.ndarray, np.ndarray]:
        # every 7 hours over a non-leap year: 1252 times covering all hours of the day
        times = np.datetime64("2001-01-01T00", "ns") + np.arange(0, 8760, 7) * np.timedelta64(1, "h")
        total = np.zeros(self.shape[0])
        square = np.zeros(self.shape[0])
        for chunk in np.array_split(times, max(1, len(times) // 256)):
            m = self._raw_mean(chunk)
            total += m.sum(axis=(0, 2, 3))
            square += (m**2).sum(axis=(0, 2, 3))
        count = len(times) * self.shape[1] * self.shape[2]
        mean = total / count
        return mean, square / count - mean**2

    def mean(self, times: Any) -> np.ndarray:
        """Exact mean :math:`m(t)` at ``times`` (datetime64, shape ``(n,)``): ``(n, C, H, W)`` float64."""
        times = as_times(times)
        flat = times.reshape(-1)
        m = self._raw_mean(flat) - self.offset[None, :, None, None]
        return m.reshape(*times.shape, *self.shape)

    @property
    def std(self) -> np.ndarray:
        """Exact standard deviation of every element (stationary): ``(C, H, W)``."""
        return np.broadcast_to(self.channel_std[:, None, None], self.shape).copy()

    def lag_correlation(self, lag: Any, dt_hours: float = 1) -> np.ndarray | float:
        r"""Exact correlation of an element with itself ``lag`` steps of ``dt_hours`` later:
        :math:`\rho^{|lag|\,dt}` (the same for every element)."""
        value = self.rho ** (np.abs(np.asarray(lag, dtype=np.float64)) * dt_hours)
        return float(value) if np.ndim(value) == 0 else value

    def temporal_correlation(self, times: Any) -> np.ndarray:
        r"""``T`` with :math:`T_{ij} = \rho^{|t_i - t_j|}` for ``times`` of shape ``(K,)``: ``(K, K)``."""
        h = hours_since_epoch(times).reshape(-1)
        return self.rho ** np.abs(h[:, None] - h[None, :])

    def spatial_covariance(self) -> np.ndarray:
        """Dense unit-variance spatial covariance ``S`` of shape ``(H W, H W)`` (small worlds)."""
        _, H, W = self.shape
        eye = np.eye(H * W).reshape(H * W, H, W)
        return np.fft.ifft2(np.fft.fft2(eye) * self.spectrum).real.reshape(H * W, H * W)

    def state_covariance(self) -> np.ndarray:
        r"""Dense covariance of one state, :math:`\Sigma_c \otimes S`: ``(C H W, C H W)``."""
        return np.kron(self.channel_covariance, self.spatial_covariance())

    def blanket_covariance(self, times: Any) -> np.ndarray:
        r"""Dense covariance :math:`C_K = T \otimes \Sigma_c \otimes S` of the states at ``times``
        (shape ``(K,)``), flattened in ``(K, C, H, W)`` order: ``(K C H W, K C H W)``.

        Dense, so for small worlds only (tests); the denoiser never builds it.
        """
        size = len(as_times(times).reshape(-1)) * int(np.prod(self.shape))
        if size > 8192:
            raise ValueError(f"blanket_covariance: {size} x {size} is too large to build densely")
        return np.kron(self.temporal_correlation(times), self.state_covariance())

    # ---------------------------------------------------------------- tensors on a device

    def device_tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Float64 tensors on ``device`` (cached): channel eigenvectors ``V`` and eigenvalues
        ``lam_c``, the half-spectrum ``P`` and the square roots ``sqrt_c``, ``sqrt_P``."""
        key = str(device)
        with self._lock:
            if key in self._device_cache:
                return self._device_cache[key]
            half = self.shape[2] // 2 + 1

            def t(a: np.ndarray) -> torch.Tensor:
                return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64, device=device)

            self._device_cache[key] = {
                "V": t(self.channel_vectors),
                "lam_c": t(self.channel_values),
                "P": t(self.spectrum[:, :half]),  # rfft2 half-spectrum
                "sqrt_c": t(
                    self.channel_vectors
                    @ np.diag(np.sqrt(np.clip(self.channel_values, 0, None)))
                    @ self.channel_vectors.T
                ),
                "sqrt_P": t(np.sqrt(self.spectrum[:, :half])),
            }
        return self._device_cache[key]

    def spectral_filter(self, y: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """Multiply the last two axes of ``y`` by ``gain`` in the (real) Fourier basis."""
        _, H, W = self.shape
        z = torch.fft.rfft2(y, norm="ortho")
        return torch.fft.irfft2(z * gain, s=(H, W), norm="ortho")

    def colour(self, white: torch.Tensor) -> torch.Tensor:
        r"""Map white noise ``(n, C, H, W)`` to anomalies with covariance :math:`\Sigma_c \otimes S`
        (applies the symmetric square root :math:`\Sigma_c^{1/2} \otimes S^{1/2}`), float64."""
        k = self.device_tensors(white.device)
        y = torch.einsum("cd,ndhw->nchw", k["sqrt_c"], white.to(torch.float64))
        return self.spectral_filter(y, k["sqrt_P"])

    # ---------------------------------------------------------------- sampling

    def iter_sample(
        self, times: Any, generator: torch.Generator | None = None, chunk: int = 744
    ) -> Iterator[tuple[int, np.ndarray]]:
        r"""Draw a trajectory at increasing ``times`` (shape ``(T,)``) in blocks of ``chunk`` states.

        Yields ``(offset, states)`` with ``states`` float32 of shape ``(<= chunk, C, H, W)``.
        The anomalies follow the exact AR(1) recursion in whitened space,
        :math:`w_0 \sim \mathcal N(0, I)`, :math:`w_i = r_i w_{i-1} + \sqrt{1 - r_i^2}\, z_i`,
        :math:`r_i = \rho^{t_i - t_{i-1}}`, coloured by :math:`\Sigma_c^{1/2} \otimes S^{1/2}`.
        One ``randn`` of shape ``(C, H, W)`` is drawn per state, so the result does not depend on
        ``chunk``.
        """
        times = as_times(times).reshape(-1)
        hours = hours_since_epoch(times)
        if len(times) > 1 and np.any(np.diff(hours) <= 0):
            raise ValueError("sample: times must be strictly increasing")
        white = None
        for offset in range(0, len(times), chunk):
            block = slice(offset, min(offset + chunk, len(times)))
            ws = []
            for i in range(block.start, block.stop):
                z = torch.randn(self.shape, generator=generator, dtype=torch.float64)
                if white is None:
                    white = z
                else:
                    r = self.rho ** (hours[i] - hours[i - 1])
                    white = r * white + math.sqrt(1 - r * r) * z
                ws.append(white)
            anomalies = self.colour(torch.stack(ws)).numpy()
            yield offset, (self.mean(times[block]) + anomalies).astype(np.float32)

    def sample(self, times: Any, generator: torch.Generator | None = None) -> np.ndarray:
        """A trajectory at ``times`` (shape ``(T,)``): float32 ``(T, C, H, W)``; see :meth:`iter_sample`."""
        blocks = [states for _, states in self.iter_sample(times, generator)]
        if not blocks:
            return np.zeros((0, *self.shape), dtype=np.float32)
        return np.concatenate(blocks)


def default_world(seed: int = 0, **kwargs: Any) -> SyntheticWorld:
    """The embedded default world, ``SyntheticWorld((4, 16, 32), seed=seed, **kwargs)``."""
    return SyntheticWorld(kwargs.pop("shape", DEFAULT_SHAPE), seed=seed, **kwargs)


__all__ = ["DEFAULT_SHAPE", "SyntheticWorld", "default_world"]
