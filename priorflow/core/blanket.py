r"""Blankets: cutting a trajectory into overlapping windows and folding their denoised states back.

A trajectory of :math:`T_0` states is sampled at the padded length
:math:`T_{pad} = K` if :math:`T_0 \le K`, else :math:`K + \lceil (T_0 - K)/S \rceil S` with stride
:math:`S = K - O`, and trimmed back to its first :math:`T_0` states. Blanket :math:`n` covers the
states :math:`[nS, nS + K)`, :math:`n = 0 .. N-1`, :math:`N = (T_{pad} - K)/S + 1`.

Folding (each output state comes from the blankets that *own* it):

- ``symmetrical``: with :math:`a = \lfloor O/2 \rfloor`, :math:`b = a + S`, blanket 0 owns its local
  states :math:`[0, b)`, middle blankets :math:`[a, b)`, the last :math:`[a, K)`;
- ``causal``: blanket 0 owns :math:`[0, K)`, every later blanket its last :math:`S` states
  :math:`[O, K)`;
- ``average``: every state is the mean of all the blankets that cover it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import torch
from torch import nn

from priorflow.core.devices import is_out_of_memory, release_cached_memory

FoldMode = Literal["symmetrical", "causal", "average"]
FOLDS: tuple[str, ...] = get_args(FoldMode)

BlanketFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BlanketPlan:
    """How a trajectory of ``trajectory_size`` states is covered by blankets of ``blanket_size``.

    Arguments:
        trajectory_size: requested number of states :math:`T_0`.
        blanket_size: states per blanket :math:`K` (from the model).
        overlap: states shared by neighbouring blankets :math:`O`, ``0 <= O < K``.
    """

    trajectory_size: int
    blanket_size: int
    overlap: int

    def __post_init__(self) -> None:
        if self.trajectory_size < 1:
            raise ValueError(f"trajectory size {self.trajectory_size} must be at least 1")
        if self.blanket_size < 1:
            raise ValueError(f"blanket size {self.blanket_size} must be at least 1")
        if not 0 <= self.overlap < self.blanket_size:
            raise ValueError(
                f"overlap {self.overlap} must satisfy 0 <= overlap < blanket size"
                f" ({self.blanket_size})"
            )

    @property
    def stride(self) -> int:
        """:math:`S = K - O`."""
        return self.blanket_size - self.overlap

    @property
    def padded_size(self) -> int:
        r""":math:`T_{pad}`: the length actually sampled."""
        k, s = self.blanket_size, self.stride
        if self.trajectory_size <= k:
            return k
        return k + math.ceil((self.trajectory_size - k) / s) * s

    @property
    def num_blankets(self) -> int:
        r""":math:`N = (T_{pad} - K) / S + 1`."""
        return (self.padded_size - self.blanket_size) // self.stride + 1

    @property
    def starts(self) -> list[int]:
        """First global state of every blanket: ``[0, S, 2S, ...]``."""
        return [n * self.stride for n in range(self.num_blankets)]

    def owned(self, fold: str) -> list[tuple[int, int]]:
        """Local ``[lo, hi)`` range of states each blanket contributes (``symmetrical``/``causal``).

        For ``average`` every blanket contributes all its states ``[0, K)``.
        """
        check_fold(fold)
        k, o, s, n_blankets = self.blanket_size, self.overlap, self.stride, self.num_blankets
        if fold == "average" or n_blankets == 1:
            return [(0, k)] * n_blankets
        if fold == "causal":
            return [(0, k)] + [(o, k)] * (n_blankets - 1)
        a = o // 2
        b = a + s
        return [(0, b)] + [(a, b)] * (n_blankets - 2) + [(a, k)]

    def trim(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Keep the first :math:`T_0` states of a padded trajectory along ``dim``."""
        return x.narrow(dim, 0, self.trajectory_size)

    @cached_property
    def window_index(self) -> torch.Tensor:
        """``(N, K)`` global state index of every blanket position."""
        starts = torch.arange(self.num_blankets) * self.stride
        return starts[:, None] + torch.arange(self.blanket_size)[None, :]

    def fold_index(self, fold: str) -> torch.Tensor:
        """``(T_pad,)`` flat index ``n K + k`` of the blanket state that gives each global state.

        Only for ``symmetrical`` and ``causal``, where ownership is a partition of the trajectory.
        """
        index = torch.empty(self.padded_size, dtype=torch.long)
        for n, (lo, hi) in enumerate(self.owned(fold)):
            start = n * self.stride
            index[start + lo : start + hi] = n * self.blanket_size + torch.arange(lo, hi)
        return index

    @cached_property
    def coverage(self) -> torch.Tensor:
        """``(T_pad,)`` number of blankets covering each state (the ``average`` divisor)."""
        counts = torch.zeros(self.padded_size)
        counts.index_add_(0, self.window_index.reshape(-1), torch.ones(self.window_index.numel()))
        return counts


def check_fold(fold: str) -> str:
    """``fold`` if it is a fold mode, else :class:`ValueError` naming the choices."""
    if fold not in FOLDS:
        raise ValueError(f"{fold!r} is not a fold mode; choose one of {', '.join(FOLDS)}")
    return fold


class BlanketDenoiser:
    r"""Trajectory denoiser composed from a blanket denoiser.

    Cuts :math:`x` of shape ``(B, T_pad, *S)`` into its :math:`B N` blankets, denoises them in
    batches of ``batch_size`` blankets (all at once by default, halved automatically on
    out-of-memory errors), optionally split over several ``devices`` held by this process, and
    folds the results back into ``(B, T_pad, *S)``.

    Arguments:
        denoiser: blanket denoiser ``d(x (n, K, *S), sigma (n,), dates (n, K, 4)) -> (n, K, *S)``.
        plan: the blanket plan of the trajectory.
        fold: ``symmetrical`` (default), ``causal`` or ``average``.
        batch_size: blankets per denoiser call; ``None`` for all of them.
        devices: devices to spread blankets over (one replica of an ``nn.Module`` denoiser each);
            results are gathered on the device of ``x``. ``None``: the device of ``x`` only.
    """

    def __init__(
        self,
        denoiser: BlanketFn,
        plan: BlanketPlan,
        fold: str = "symmetrical",
        batch_size: int | None = None,
        devices: Sequence[str | torch.device] | None = None,
    ):
        self.denoiser = denoiser
        self.plan = plan
        self.fold = check_fold(fold)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"blanket batch {batch_size} must be a positive number of blankets")
        self.batch_size = batch_size
        self.devices = [torch.device(d) for d in devices] if devices else []
        self._replicas: dict[torch.device, BlanketFn] = {}
        self._fold_index = None if fold == "average" else plan.fold_index(fold)
        self.blanket_evaluations = 0
        self.calls = 0

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor | float, dates: torch.Tensor
    ) -> torch.Tensor:
        r"""Denoise whole trajectories.

        Arguments:
            x: ``(B, T_pad, *S)`` noisy trajectories.
            sigma: noise level, a scalar or ``(B,)``.
            dates: ``(B, T_pad, 4)`` or ``(T_pad, 4)`` (shared by the batch) per-state dates.

        Returns:
            ``(B, T_pad, *S)`` denoised trajectories, in ``x``'s dtype and device.
        """
        plan = self.plan
        batch, length = x.shape[0], x.shape[1]
        if length != plan.padded_size:
            raise ValueError(f"x has {length} states, the plan needs T_pad = {plan.padded_size}")
        if dates.dim() == 2:
            dates = dates.expand(batch, -1, -1)
        if dates.shape[:2] != (batch, length):
            raise ValueError(
                f"dates of shape {tuple(dates.shape)} do not match x of shape {tuple(x.shape)}"
            )
        state_shape = x.shape[2:]
        n, k = plan.num_blankets, plan.blanket_size
        window = plan.window_index.to(x.device)
        blankets = x[:, window].reshape(batch * n, k, *state_shape)
        blanket_dates = dates.to(x.device)[:, window].reshape(batch * n, k, dates.shape[-1])
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        blanket_sigma = sigma.expand(batch).repeat_interleave(n)

        denoised = self._evaluate(blankets, blanket_sigma, blanket_dates).to(x.dtype)
        self.blanket_evaluations += batch * n
        self.calls += 1
        return self._fold(denoised.reshape(batch, n * k, *state_shape), window)

    def _fold(self, denoised: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """``(B, N K, *S)`` blanket outputs -> ``(B, T_pad, *S)``."""
        if self._fold_index is not None:
            index = self._fold_index.to(denoised.device)
            return denoised.index_select(1, index)
        plan = self.plan
        out = denoised.new_zeros(denoised.shape[0], plan.padded_size, *denoised.shape[2:])
        out.index_add_(1, window.reshape(-1), denoised)
        coverage = plan.coverage.to(device=out.device, dtype=out.dtype)
        return out / coverage.reshape(1, -1, *([1] * (out.dim() - 2)))

    def _evaluate(self, x: torch.Tensor, sigma: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        """Denoise ``(M, K, *S)`` blankets in batches, lowering the batch size on out-of-memory."""
        total = x.shape[0]
        while True:
            size = min(self.batch_size or total, total)
            try:
                parts = [
                    self._evaluate_devices(
                        x[i : i + size], sigma[i : i + size], dates[i : i + size]
                    )
                    for i in range(0, total, size)
                ]
                return parts[0] if len(parts) == 1 else torch.cat(parts)
            except Exception as error:
                if not is_out_of_memory(error) or size == 1:
                    raise
                self.batch_size = max(1, size // 2)
                release_cached_memory()

    def _evaluate_devices(
        self, x: torch.Tensor, sigma: torch.Tensor, dates: torch.Tensor
    ) -> torch.Tensor:
        """One batch: on ``x``'s device, or split over ``devices`` and gathered on ``x``'s device."""
        if len(self.devices) <= 1 and (not self.devices or self.devices[0] == x.device):
            return self.denoiser(x, sigma, dates)
        chunks = [
            (device, xs, ss, ds)
            for device, xs, ss, ds in zip(
                self.devices,
                x.tensor_split(len(self.devices)),
                sigma.tensor_split(len(self.devices)),
                dates.tensor_split(len(self.devices)),
                strict=True,
            )
            if xs.shape[0] > 0
        ]

        def run(
            device: torch.device, xs: torch.Tensor, ss: torch.Tensor, ds: torch.Tensor
        ) -> torch.Tensor:
            with torch.no_grad():
                out = self._replica(device)(xs.to(device), ss.to(device), ds.to(device))
            return out.to(x.device)

        if len(chunks) == 1:
            return run(*chunks[0])
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            outputs = list(pool.map(lambda chunk: run(*chunk), chunks))
        return torch.cat(outputs)

    def _replica(self, device: torch.device) -> BlanketFn:
        """The denoiser on ``device``: a copy of an ``nn.Module`` per device, a function as is."""
        if device not in self._replicas:
            if isinstance(self.denoiser, nn.Module):
                tensors = [*self.denoiser.parameters(), *self.denoiser.buffers()]
                same = not tensors or tensors[0].device == device
                self._replicas[device] = (
                    self.denoiser if same else copy.deepcopy(self.denoiser).to(device)
                )
            else:
                self._replicas[device] = self.denoiser
        return self._replicas[device]
