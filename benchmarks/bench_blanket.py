"""Speed of the blanket trajectory denoiser and of a full sampling run, as ratios.

Measured side by side in one process, on the CPU, for a backbone of about 0.5 M parameters,
K = 8, O = 4, T = 72 (17 blankets):

1. ``BlanketDenoiser`` (all blankets in one batched call) against a per-blanket Python loop
   doing the same work (goal: at least 3x faster);
2. a full ``lms`` sampling run through ``generate_trajectory`` against the pure backbone forward
   time of the same blanket evaluations (goal: at most 1.10x, i.e. < 10 % overhead).

Usage: ``python benchmarks/bench_blanket.py [--threads N] [--repeats R] [--steps S]``.

Measured on the 2-core CPU machine (2026-11-24, quiet): overhead 1.00x (conv) and 1.03-1.28x
(token MLP, noisy); speed-up 0.67x / 0.74x. On the CPU both backbones are compute-bound (about
10 ms per blanket), so one batched call does the same work as the loop; a sweep of blanket
batch sizes 1-17 was flat within 30 % with no consistent winner. The speed-up from batching is
a per-call-overhead effect (kernel launches), to be measured on a GPU (``--device cuda``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import datetime

import torch
from torch import nn

from priorflow.core.blanket import BlanketDenoiser, BlanketPlan
from priorflow.core.dates import timestamps
from priorflow.core.generate import generate_trajectory
from priorflow.models.card import ModelCard
from priorflow.models.loading import Model

STATE = (4, 16, 32)
K, O, T = 8, 4, 72


class BenchBackbone(nn.Module):
    """About 0.5 M parameters: per-state 2-D convolutions with temporal mixing across K."""

    def __init__(self, channels: int = 4, width: int = 128, depth: int = 3, blanket_size: int = K):
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(depth))
        self.time_mix = nn.Conv1d(width, width, 3, padding=1)
        self.noise = nn.Linear(1, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        n, k, c, h, w = x.shape
        y = self.inp(x.reshape(n * k, c, h, w))
        y = y + self.noise(c_noise[:, None]).repeat_interleave(k, 0)[:, :, None, None]
        for block in self.blocks:
            y = y + torch.relu(block(y))
        pooled = y.mean((2, 3)).reshape(n, k, -1).transpose(1, 2)
        y = y + self.time_mix(pooled).transpose(1, 2).reshape(n * k, -1, 1, 1)
        return self.out(y).reshape(n, k, c, h, w)


class TokenBackbone(nn.Module):
    """About 0.5 M parameters applied per state vector: a residual MLP over latent tokens.

    Latent states of graph/token models (``(nodes, C)``) put the parameters in channel mixing,
    so each call is light and per-call overhead matters, as on a GPU.
    """

    def __init__(self, channels: int = 4, width: int = 320, depth: int = 4, blanket_size: int = K):
        super().__init__()
        self.inp = nn.Linear(channels * blanket_size, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.noise = nn.Linear(1, width)
        self.out = nn.Linear(width, channels * blanket_size)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        n, k, c, h, w = x.shape
        tokens = x.permute(0, 3, 4, 1, 2).reshape(n, h * w, k * c)
        y = self.inp(tokens) + self.noise(c_noise[:, None])[:, None]
        for block in self.blocks:
            y = y + torch.relu(block(y))
        return self.out(y).reshape(n, h, w, k, c).permute(0, 3, 4, 1, 2)


def interleaved(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, measured in alternation after one warm-up each."""

    def sync() -> None:  # GPU kernels run asynchronously: wait for them inside the timing
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    for fn in functions.values():
        fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            began = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(
    backbone: nn.Module, steps: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Seconds for: one loop call, one batched call, steps pure forwards, one sampling run."""
    card = ModelCard(
        backbone={"target": "benchmarks.bench_blanket:BenchBackbone"},
        blanket_size=K,
        dt_hours=1,
        state_shape=STATE,
        denoising_steps=steps,
    )
    model = Model(card, backbone.eval().to(device))
    denoiser = model.denoiser("float32")
    plan = BlanketPlan(T, K, O)
    x = torch.randn(1, plan.padded_size, *STATE, device=device)
    dates = timestamps(datetime(2000, 4, 3), plan.padded_size, 1).to(device)
    sigma = torch.tensor(3.0, device=device)
    composed = BlanketDenoiser(denoiser, plan)

    def per_blanket_loop() -> torch.Tensor:
        out = torch.empty_like(x)
        for start, (lo, hi) in zip(plan.starts, plan.owned("symmetrical"), strict=True):
            window = slice(start, start + K)
            y = denoiser(x[:, window], sigma[None], dates[None, window])
            out[:, start + lo : start + hi] = y[:, lo:hi]
        return out

    blankets = x[:, plan.window_index].reshape(-1, K, *STATE)
    blanket_dates = dates[plan.window_index]
    c_noise = torch.full((plan.num_blankets,), 10 * float(torch.log(sigma)), device=device)

    def pure_forwards() -> None:
        for _ in range(steps):
            backbone(blankets, c_noise, blanket_dates)

    def sampling_run() -> None:
        generate_trajectory(
            model, T, datetime(2000, 4, 3), 0, overlap=O, steps=steps, devices=[device]
        )

    with torch.no_grad():
        torch.testing.assert_close(
            composed(x, sigma, dates), per_blanket_loop(), rtol=1e-4, atol=1e-4
        )
        calls = interleaved(
            {"loop": per_blanket_loop, "batched": lambda: composed(x, sigma, dates)}, repeats
        )
        runs = interleaved({"pure": pure_forwards, "sampling": sampling_run}, max(2, repeats // 2))
    return calls | runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbones = {"conv (compute-bound)": BenchBackbone(), "token MLP": TokenBackbone()}

    print(
        f"K={K}, O={O}, T={T}, {BlanketPlan(T, K, O).num_blankets} blankets of {STATE}; "
        f"{args.device}, {args.threads} threads; lms, {args.steps} steps; medians of interleaved runs"
    )
    header = f"{'backbone':<22}{'params':>8}{'loop s':>9}{'batch s':>9}{'speed-up':>10}"
    header += f"{'forward s':>11}{'sample s':>10}{'overhead':>10}"
    print(header)
    for name, backbone in backbones.items():
        params = sum(p.numel() for p in backbone.parameters()) / 1e6
        t = measure(backbone, args.steps, args.repeats, torch.device(args.device))
        print(
            f"{name:<22}{params:>7.2f}M{t['loop']:>9.4f}{t['batched']:>9.4f}"
            f"{t['loop'] / t['batched']:>9.2f}x{t['pure']:>11.3f}{t['sampling']:>10.3f}"
            f"{t['sampling'] / t['pure']:>9.3f}x"
        )
    print(
        "goals: speed-up >= 3x (batched vs per-blanket loop); overhead <= 1.10x (full run vs forwards)"
    )


if __name__ == "__main__":
    main()
