r"""The reference backbone: a small spatio-temporal U-Net over blankets of latent states.

:class:`ReferenceBackbone` is a backbone ``F(x, c_noise, dates)`` for
:class:`~priorflow.core.denoiser.PreconditionedDenoiser`:

- ``x``: blankets of ``K`` states, shape ``(n, K, C, H, W)``;
- ``c_noise``: ``10 log sigma``, shape ``(n,)``;
- ``dates``: ``(year, month, day, hour)`` of every state, shape ``(n, K, 4)``.

Each state is processed by a 2-D U-Net (``len(channels)`` resolutions, ``blocks`` residual
blocks per resolution) whose blocks are conditioned (FiLM: :math:`h \leftarrow h (1 + a) + b`)
on an embedding of the noise level and of the state's own date (year progress and hour of
day as :math:`\sin/\cos`), and after every residual block a temporal residual block mixes the
``K`` states with a 1-D convolution over time at every pixel. A learned positional field lets
the network place features that do not move (coasts, mountains), and a date-dependent one,
:math:`\sum_r a_r(\text{date}, \sigma)\,P_r(y, x)` with learned maps :math:`P_r`, features
that move with the date (a warm spot under the sun, a seasonal shift).

The defaults (``channels=(16, 32, 64)``, ``blocks=1``) have about 0.24 M parameters and train on
two CPU cores in minutes; on a GPU scale ``channels`` (e.g. ``(64, 128, 256)``), ``blocks`` and
``embedding`` through the model card's ``backbone.kwargs``. ``padding="circular"`` suits a
periodic domain but costs about twice the time on a CPU (the padding copies every activation).

With ``spectral_skip=True`` the output also carries the Wiener estimate of the blanket under a
Gaussian prior fitted on the training states (:meth:`ReferenceBackbone.spectral_skip_term`): a
climatological mean (a regression on the date's season and hour), and anomalies that are
stationary, with per spatial Fourier mode a covariance between channels and an AR(1)
correlation from one state to the next. The network then learns only what that estimate misses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from priorflow.errors import ConfigError

# Days before the first of each month in a common year.
_MONTH_OFFSETS = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
# Bound on the spectral skip's lag correlation: R_k's condition number stays under 400.
_MAX_LAG_CORRELATION = 0.995
# Diurnal harmonics of the spectral skip's climatological mean (climatology_features).
_CLIMATOLOGY_HARMONICS = 4
# 1, two seasonal pairs, the diurnal pairs, the first seasonal pair times each diurnal pair
_CLIMATOLOGY_FEATURES = 1 + 4 + 2 * _CLIMATOLOGY_HARMONICS + 4 * _CLIMATOLOGY_HARMONICS


def date_features(dates: torch.Tensor, harmonics: int = 1) -> torch.Tensor:
    r"""Seasonal and diurnal features of ``(year, month, day, hour)`` dates.

    With year progress :math:`p = (\mathrm{doy} - 1 + h/24) / \mathrm{days\ in\ year}` and
    hour :math:`h`, the features are :math:`\sin(2\pi k p), \cos(2\pi k p),
    \sin(2\pi k h / 24), \cos(2\pi k h / 24)` for :math:`k = 1..\mathrm{harmonics}`.

    Arguments:
        dates: long tensor ``(*, 4)``.
        harmonics: number of harmonics of each cycle.

    Returns:
        float32 tensor ``(*, 4 harmonics)``: the seasonal sines (``k = 1..harmonics``), seasonal
        cosines, diurnal sines, diurnal cosines.
    """
    dates = dates.long()
    year, month, day, hour = dates.unbind(-1)
    offsets = torch.tensor(_MONTH_OFFSETS, device=dates.device)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    doy = offsets[(month - 1).clamp(0, 11)] + day + (leap & (month > 2)).long()  # 1-based
    hours = hour.float()
    progress = (doy.float() - 1 + hours / 24) / (365 + leap.float())
    daily = hours / 24
    k = torch.arange(1, harmonics + 1, device=dates.device, dtype=torch.float32)
    angles = 2 * math.pi * torch.stack([progress, daily], dim=-1)[..., None] * k  # (*, 2, h)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2)


def climatology_features(dates: torch.Tensor) -> torch.Tensor:
    r"""Regressors of a climatological mean state on ``(year, month, day, hour)`` dates.

    With the year progress :math:`p` and hour :math:`h` of :func:`date_features`:
    :math:`1`; :math:`\sin, \cos(2\pi j p)` for :math:`j = 1, 2` (the season);
    :math:`\sin, \cos(2\pi k h / 24)` for :math:`k = 1..4` (the day: a feature that moves
    with the sun has several diurnal harmonics at a point); and the products of the first
    seasonal pair with the diurnal pairs (the day's cycle changing with the season).

    Returns:
        float32 tensor ``(*, 29)``.
    """
    # (*, cycle: season/day, sin/cos, harmonic)
    f = date_features(dates, _CLIMATOLOGY_HARMONICS).unflatten(-1, (2, 2, -1))
    season = f[..., 0, :, :2].flatten(-2)  # (*, 4)
    day = f[..., 1, :, :].flatten(-2)  # (*, 8)
    first = f[..., 0, :, 0]  # (*, 2)
    both = (first[..., :, None] * day[..., None, :]).flatten(-2)  # (*, 16)
    return torch.cat([torch.ones_like(season[..., :1]), season, day, both], dim=-1)


def noise_features(c_noise: torch.Tensor, size: int = 16) -> torch.Tensor:
    r"""Fourier features of :math:`c_{noise} = 10 \log\sigma` (about -70 to 70).

    Frequencies are geometric, periods from about 6 to 600 units of :math:`c_{noise}`.

    Returns:
        float32 tensor ``(n, size)``.
    """
    half = size // 2
    periods = torch.logspace(math.log10(6.0), math.log10(600.0), half, device=c_noise.device)
    angles = 2 * math.pi * c_noise.float()[:, None] / periods
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ResBlock(nn.Module):
    r"""Residual 2-D block with FiLM conditioning on an embedding.

    ``h = conv(silu(norm(x))); h = h (1 + a) + b; y = skip(x) + conv(silu(norm(h)))``.
    Works on ``(m, c_in, H, W)`` with embedding ``(m, E)``.
    """

    def __init__(self, c_in: int, c_out: int, embedding: int, groups: int, padding_mode: str):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode=padding_mode)
        self.film = nn.Linear(embedding, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, padding_mode=padding_mode)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        a, b = self.film(emb)[..., None, None].chunk(2, dim=1)
        h = h * (1 + a) + b
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class TemporalBlock(nn.Module):
    r"""Residual mixing of the ``K`` states: a 1-D convolution over time at every pixel.

    Works on ``(n K, c, H, W)``; ``y = x + conv_t(silu(norm(x)))`` with a kernel of
    ``kernel`` states (zero-padded at the blanket's ends).
    """

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.conv = nn.Conv3d(channels, channels, (kernel, 1, 1), padding=(kernel // 2, 0, 0))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        m, c, h, w = x.shape
        y = F.silu(self.norm(x))
        y = y.reshape(m // k, k, c, h, w).transpose(1, 2)  # (n, c, K, H, W)
        y = self.conv(y).transpose(1, 2).reshape(m, c, h, w)
        return x + y


def _groups(channels: int, groups: int) -> int:
    """Largest divisor of ``channels`` not above ``groups``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


class ReferenceBackbone(nn.Module):
    r"""Spatio-temporal U-Net backbone ``F(x (n, K, C, H, W), c_noise (n,), dates (n, K, 4))``.

    Arguments:
        state_shape: ``(C, H, W)`` of one latent state; ``H`` and ``W`` must be divisible by
            ``2 ** (len(channels) - 1)``.
        channels: width at each resolution (the first at full resolution, each next one at
            half the previous resolution).
        blocks: residual blocks per resolution (each followed by a temporal block).
        embedding: width of the noise + date embedding.
        temporal_kernel: states seen by each temporal convolution (odd).
        harmonics: harmonics of the seasonal and diurnal date features.
        groups: GroupNorm groups (at most).
        padding: ``"zeros"`` or ``"circular"`` (for a periodic domain).
        upsampling: ``"nearest"`` or ``"bilinear"``, how the decoder doubles the resolution
            (nearest copies each value to a 2 x 2 block, which puts power at the Nyquist
            wavenumber that the next convolution must learn to remove).
        position_rank: number of learned maps :math:`P_r` of the date-dependent positional
            field :math:`\sum_r a_r(\text{date}, \sigma) P_r(y, x)` added at the input
            (0: none). It lets a feature move with the date (a warm spot under the sun) without
            the convolutions having to learn where it is.
        spectral_skip: add to the output the Wiener estimate of the blanket from its noisy
            version, :meth:`spectral_skip_term`, under a Gaussian prior fitted on the training
            states (:meth:`fit_states`, called by training): climatological mean, and per
            spatial Fourier mode the channels' covariance and the lag correlation. The network
            then learns only what that estimate misses, instead of a gain that must differ a
            hundredfold between the strong large and the weak small scales and an average over
            the blanket's states, which plain training learns slowly (models/reference/README.md).

    Raises:
        ConfigError: for a ``state_shape`` (or setting) it cannot handle.
    """

    def __init__(
        self,
        state_shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 64),
        blocks: int = 1,
        embedding: int = 64,
        temporal_kernel: int = 3,
        harmonics: int = 1,
        groups: int = 8,
        padding: str = "zeros",
        position_rank: int = 8,
        upsampling: str = "nearest",
        spectral_skip: bool = False,
    ):
        super().__init__()
        shape = tuple(int(s) for s in state_shape)
        channels = tuple(int(c) for c in channels)
        levels = len(channels)
        if levels < 1 or min(channels) < 1 or blocks < 1 or embedding < 1 or harmonics < 1:
            raise ConfigError(
                "backbone.kwargs: channels, blocks, embedding and harmonics must be positive"
            )
        factor = 2 ** (levels - 1)
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(
                f"state_shape: {shape} is not (C, H, W) with positive sizes; the reference"
                " backbone takes 3-D states (channels, height, width)"
            )
        if shape[1] % factor or shape[2] % factor:
            raise ConfigError(
                f"state_shape: H={shape[1]} and W={shape[2]} must be divisible by {factor}"
                f" (the backbone halves the resolution {levels - 1} times with channels="
                f"{list(channels)}); use fewer channel levels or a divisible shape"
            )
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ConfigError(
                f"backbone.kwargs.temporal_kernel: {temporal_kernel} must be a positive odd number"
            )
        if upsampling not in ("nearest", "bilinear"):
            raise ConfigError(
                f"backbone.kwargs.upsampling: {upsampling!r} is not an upsampling; use nearest or"
                " bilinear"
            )
        if position_rank < 0:
            raise ConfigError(f"backbone.kwargs.position_rank: {position_rank} must be 0 or more")
        if padding not in ("zeros", "circular"):
            raise ConfigError(
                f"backbone.kwargs.padding: {padding!r} is not a padding; use zeros or circular"
            )
        self.state_shape = shape
        self.upsampling, self.circular = upsampling, padding == "circular"
        self.harmonics = harmonics
        self.noise_size = 16
        c, h, w = shape
        inputs = self.noise_size + 4 * harmonics
        self.embed = nn.Sequential(
            nn.Linear(inputs, embedding), nn.SiLU(), nn.Linear(embedding, embedding), nn.SiLU()
        )
        self.conv_in = nn.Conv2d(c, channels[0], 3, padding=1, padding_mode=padding)
        self.position = nn.Parameter(torch.zeros(1, channels[0], h, w))
        # date-dependent positional field: sum_r a_r(emb) P_r(y, x), learned maps P_r
        self.position_rank = position_rank
        if position_rank:
            self.position_maps = nn.Parameter(0.1 * torch.randn(position_rank, h, w))
            self.position_mix = nn.Linear(embedding, channels[0] * position_rank)

        def stage(c_in: int, c_out: int) -> nn.ModuleList:
            mods = []
            for i in range(blocks):
                mods.append(ResBlock(c_in if i == 0 else c_out, c_out, embedding, groups, padding))
                mods.append(TemporalBlock(c_out, temporal_kernel, groups))
            return nn.ModuleList(mods)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, width in enumerate(channels):
            self.down.append(stage(width, width))
            if i < levels - 1:
                self.downsample.append(
                    nn.Conv2d(width, channels[i + 1], 3, stride=2, padding=1, padding_mode=padding)
                )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(levels - 1)):
            self.upsample.append(
                nn.Conv2d(channels[i + 1], channels[i], 3, padding=1, padding_mode=padding)
            )
            self.up.append(stage(2 * channels[i], channels[i]))
        self.norm_out = nn.GroupNorm(_groups(channels[0], groups), channels[0])
        self.conv_out = nn.Conv2d(channels[0], c, 3, padding=1, padding_mode=padding)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.spectral_skip = spectral_skip
        if spectral_skip:  # mean 0, covariance I, no lag correlation until fit_states: term 0
            eye = torch.eye(c)[None, None].expand(h, w // 2 + 1, c, c)
            self.register_buffer("climatology", torch.zeros(_CLIMATOLOGY_FEATURES, c, h, w))
            self.register_buffer(
                "channel_covariance", torch.stack([eye, torch.zeros_like(eye)], dim=-1).clone()
            )
            self.register_buffer("lag_correlation", torch.zeros(h, w // 2 + 1))

    def state_problem(self) -> str | None:
        r"""Why the skip's loaded statistics cannot be a prior (``None`` when they can): they
        must be finite, :math:`|\rho_k| \le 0.995` and every :math:`S_k` Hermitian and
        positive definite, as :meth:`fit_states` writes them."""
        if not self.spectral_skip:
            return None
        for name in ("climatology", "channel_covariance", "lag_correlation"):
            if not torch.isfinite(getattr(self, name)).all():
                return f"the spectral skip's {name} is not finite"
        if self.lag_correlation.abs().max() > _MAX_LAG_CORRELATION + 1e-6:
            return f"the spectral skip's lag_correlation lies beyond +-{_MAX_LAG_CORRELATION}"
        covariance = torch.view_as_complex(self.channel_covariance.double().contiguous())
        scale = covariance.abs().amax().clamp(min=1e-12)
        if (covariance - covariance.mH).abs().amax() > 1e-5 * scale:
            return "the spectral skip's channel_covariance is not Hermitian"
        if torch.linalg.eigvalsh(covariance).amin() <= 0:
            return "the spectral skip's channel_covariance is not positive definite"
        return None

    def mean_state(self, dates: torch.Tensor) -> torch.Tensor:
        r"""The skip's climatological mean :math:`m(t) = \sum_j \phi_j(t) M_j` at ``dates``
        ``(*, 4)``: ``(*, C, H, W)`` (:func:`climatology_features`, maps ``M_j`` fitted by
        :meth:`fit_states`)."""
        features = climatology_features(dates.to(self.climatology.device))
        return torch.einsum("...j,jchw->...chw", features, self.climatology)

    @torch.no_grad()
    def fit_states(
        self,
        states: torch.Tensor,
        dates: torch.Tensor,
        lag_pairs: torch.Tensor | None = None,
        chunk: int = 256,
    ) -> None:
        r"""Fit the skip's prior from training states ``(N, C, H, W)`` at ``dates`` ``(N, 4)``.

        - the climatological mean :math:`m(t) = \sum_j \phi_j(t) M_j`: least squares of the
          states on :func:`climatology_features` at every grid point (normal equations in
          float64, directions of the features' Gram matrix below ``1e-10`` of its largest
          eigenvalue dropped, so a narrow range of dates still gives a finite fit);
        - per spatial Fourier mode ``k`` (``rfft2``, orthonormal) of the anomalies
          :math:`d = \hat x - \hat m` (a ``C``-vector): the channel covariance
          :math:`S_k = \overline{d_k d_k^H}` (Hermitian);
        - the lag correlation :math:`\rho_k = \sum_{(i,j)} \Re(d_{i,k}^H d_{j,k}) \big/
          \sum_{(i,j)} \tfrac12 (|d_{i,k}|^2 + |d_{j,k}|^2)` over ``lag_pairs`` ``(M, 2)``,
          indices of states ``j`` one blanket step after ``i`` (so :math:`|\rho_k| \le 1`;
          clamped to :math:`\pm 0.995`, which keeps the prior's covariance well conditioned).
          Without pairs :math:`\rho_k = 0`: the skip then treats every state alone.

        Sums run in float64 over chunks of ``chunk`` states.
        """
        if not self.spectral_skip:
            return
        device = self.climatology.device
        features = climatology_features(dates.to(device)).double()  # (N, J)
        gram = features.T @ features
        moments = torch.zeros(len(gram), states[0].numel(), dtype=torch.float64, device=device)
        for i in range(0, len(states), chunk):
            part = states[i : i + chunk].to(device, torch.float64).flatten(1)
            moments += features[i : i + chunk].T @ part
        values, vectors = torch.linalg.eigh(gram)
        keep = values > 1e-10 * values.max()
        inverse = vectors[:, keep] @ torch.diag(1 / values[keep]) @ vectors[:, keep].T
        maps = (inverse @ moments).reshape(self.climatology.shape)

        def spectra(index: torch.Tensor | slice) -> torch.Tensor:
            mean = torch.einsum("nj,jchw->nchw", features[index], maps)
            part = states[index].to(device, torch.float64) - mean
            return torch.fft.rfft2(part, norm="ortho")

        channels = len(maps[0])
        covariance = torch.zeros(
            (*self.lag_correlation.shape, channels, channels),
            dtype=torch.complex128,
            device=device,
        )
        for i in range(0, len(states), chunk):
            d = spectra(slice(i, i + chunk))
            covariance += torch.einsum("nahw,nbhw->hwab", d, d.conj())
        covariance /= len(states)
        covariance += 1e-6 * torch.eye(channels, dtype=covariance.dtype, device=device)
        rho = torch.zeros(self.lag_correlation.shape, dtype=torch.float64, device=device)
        if lag_pairs is not None and len(lag_pairs):
            cross, both = torch.zeros_like(rho), torch.zeros_like(rho)
            for i in range(0, len(lag_pairs), chunk):
                pairs = lag_pairs[i : i + chunk]
                first, second = spectra(pairs[:, 0]), spectra(pairs[:, 1])
                cross += (first.conj() * second).real.sum(dim=(0, 1))
                both += (first.abs().square() + second.abs().square()).sum(dim=(0, 1)) / 2
            rho = (cross / both.clamp(min=1e-12)).clamp(
                -_MAX_LAG_CORRELATION, _MAX_LAG_CORRELATION
            )
        self.climatology.copy_(maps.float())
        self.channel_covariance.copy_(torch.view_as_real(covariance).float())
        self.lag_correlation.copy_(rho.float())

    def spectral_skip_term(
        self, x: torch.Tensor, sigma: torch.Tensor, dates: torch.Tensor
    ) -> torch.Tensor:
        r"""The part of ``F`` that makes the denoiser the Wiener estimate of the blanket under
        a Gaussian prior with the climatological mean :math:`m(t)` (:meth:`mean_state`) and
        stationary anomalies, per spatial Fourier mode ``k``, with channel covariance
        :math:`S_k` and AR(1) in time.

        Per mode, the ``K x C`` coefficients of a blanket have mean :math:`\hat m_k` and
        covariance :math:`\Sigma_k = R_k \otimes S_k`, :math:`(R_k)_{ij} = \rho_k^{|i - j|}`.
        With the noisy blanket :math:`y`, :math:`u = c_{in} y`, :math:`c_{in} = 1/\sqrt{\sigma^2
        + 1}` and the EDM preconditioning :math:`D = c_{skip} y + c_{out} F`, the posterior mean
        :math:`\hat m_k + \Sigma_k (\Sigma_k + \sigma^2 I)^{-1} (y_k - \hat m_k)` is reached
        with

        .. math::
            F_k = \sigma (\Sigma_k + \sigma^2 I)^{-1}
                  \left(\sqrt{\sigma^2 + 1}\,\hat m_k + (\Sigma_k - I)\,u_k\right),

        evaluated in the eigenbasis :math:`V \otimes U` of :math:`R_k = V \operatorname{diag}
        (\ell) V^\top` and :math:`S_k = U \operatorname{diag}(s) U^H`, where with
        :math:`\lambda = \ell_b s_a` each component is
        :math:`\sigma/(\lambda + \sigma^2)\,(\sqrt{\sigma^2 + 1}\,\tilde m + (\lambda - 1)\tilde u)`:
        0 for :math:`S_k = I, \rho_k = 0, m = 0`, finite at every :math:`\sigma` (it tends
        to :math:`\hat m_k` as :math:`\sigma \to \infty`, to 0 as :math:`\sigma \to 0`).

        Arguments:
            x: ``(n, K, C, H, W)``, the preconditioned input :math:`c_{in} y`.
            sigma: ``(n,)``.
            dates: ``(n, K, 4)``.
        """
        k, (h, w) = x.shape[1], x.shape[-2:]
        rho = self.lag_correlation.double().clamp(-_MAX_LAG_CORRELATION, _MAX_LAG_CORRELATION)
        lags = torch.arange(k, device=x.device)
        lags = (lags[:, None] - lags[None, :]).abs().double()
        # R_k (H, Wf, K, K) and S_k (H, Wf, C, C) per spatial mode; eigh in float64
        ell, time_basis = torch.linalg.eigh(rho[..., None, None] ** lags)
        covariance = torch.view_as_complex(self.channel_covariance.double().contiguous())
        spread, channel_basis = torch.linalg.eigh(covariance)
        lam = spread.clamp(min=1e-6)[..., :, None] * ell[..., None, :]  # (H, Wf, C, K)
        s = sigma.double().reshape(-1, 1, 1, 1, 1)
        time_basis = time_basis.to(torch.complex128)

        def eigen(states: torch.Tensor) -> torch.Tensor:
            """(n, K, C, H, W) -> coordinates (n, H, Wf, C, K) in the eigenbasis."""
            spectrum = torch.fft.rfft2(states.double(), norm="ortho")
            return torch.einsum(
                "hwca,hwkb,nkchw->nhwab", channel_basis.conj(), time_basis, spectrum
            )

        u, mean = eigen(x.float()), eigen(self.mean_state(dates))
        term = s / (lam + s**2) * (torch.sqrt(s**2 + 1) * mean + (lam - 1) * u)
        term = torch.einsum("hwca,hwkb,nhwab->nkchw", channel_basis, time_basis, term)
        return torch.fft.irfft2(term.to(torch.complex64), s=(h, w), norm="ortho")

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        r"""Evaluate ``F``.

        Arguments:
            x: ``(n, K, C, H, W)`` (the preconditioned input :math:`c_{in} x_\sigma`).
            c_noise: ``(n,)`` or a scalar.
            dates: long ``(n, K, 4)``.

        Returns:
            ``(n, K, C, H, W)``.
        """
        n, k = x.shape[:2]
        if tuple(x.shape[2:]) != self.state_shape:
            raise ValueError(
                f"ReferenceBackbone: states of shape {tuple(x.shape[2:])}, built for"
                f" {self.state_shape}"
            )
        c_noise = torch.as_tensor(c_noise, device=x.device).float().reshape(-1).expand(n)
        features = torch.cat(
            [
                noise_features(c_noise, self.noise_size)[:, None].expand(n, k, self.noise_size),
                date_features(dates.to(x.device), self.harmonics),
            ],
            dim=-1,
        )
        emb = self.embed(features).reshape(n * k, -1)
        h = self.conv_in(x.reshape(n * k, *self.state_shape)) + self.position
        if self.position_rank:
            mix = self.position_mix(emb).reshape(n * k, -1, self.position_rank)
            h = h + torch.einsum("mcr,rhw->mchw", mix, self.position_maps.to(mix.dtype))
        skips = []
        for i, stage in enumerate(self.down):
            h = self._stage(stage, h, emb, k)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        for upsample, stage in zip(self.upsample, self.up, strict=True):
            h = upsample(self._double(h))
            h = self._stage(stage, torch.cat([h, skips.pop()], dim=1), emb, k)
        out = self.conv_out(F.silu(self.norm_out(h))).reshape(n, k, *self.state_shape)
        if self.spectral_skip:
            skip = self.spectral_skip_term(x, torch.exp(c_noise / 10), dates.to(x.device))
            out = out + skip.to(out.dtype)
        return out

    def _double(self, h: torch.Tensor) -> torch.Tensor:
        """Twice the resolution: nearest (blocks of 2 x 2, power at the Nyquist wavenumber) or
        bilinear (on a periodic domain through one wrapped cell at every edge)."""
        if self.upsampling == "nearest":
            return F.interpolate(h, scale_factor=2.0, mode="nearest")
        if not self.circular:
            return F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
        wide = F.interpolate(
            F.pad(h, (1, 1, 1, 1), mode="circular"),
            scale_factor=2.0,
            mode="bilinear",
            align_corners=False,
        )
        return wide[..., 2:-2, 2:-2]

    @staticmethod
    def _stage(stage: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor, k: int) -> torch.Tensor:
        for module in stage:
            h = module(h, emb) if isinstance(module, ResBlock) else module(h, k)
        return h
