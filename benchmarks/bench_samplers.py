"""Sampler quality per denoiser evaluation, computed exactly (no Monte Carlo).

With the exact blanket denoiser of a Gaussian prior (AR(1) in time, rho = 0.9 per state, unit
variance) every deterministic sampler is a linear map of its initial noise: propagating the basis
through the sampler's own code (float64) gives its output covariance exactly. The table is the
relative Frobenius error of that covariance,

- against the true prior, for one blanket covering the trajectory (K = T = 16: the samplers'
  own error);
- against lms at 512 steps, for a composed trajectory (K = 8, O = 4, T = 24: what a run does),

for every sampler, grid and budget of denoiser evaluations (Heun uses two per step).

Usage: ``python benchmarks/bench_samplers.py [--budgets 8,16,32,64]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from priorflow.core.blanket import BlanketDenoiser, BlanketPlan
from priorflow.core.grids import GRIDS
from priorflow.core.samplers import make_sampler
from priorflow.core.schedules import make_schedule

RHO = 0.9
SAMPLERS = {  # name -> (config, evaluations per step)
    "lms": ({"order": 3}, 1),
    "ddim": ({}, 1),
    "heun": ({}, 2),
    "dpmpp-2": ({"order": 2}, 1),
    "dpmpp-3": ({"order": 3}, 1),
}


def ar1(size: int) -> np.ndarray:
    lags = np.abs(np.arange(size)[:, None] - np.arange(size)[None, :])
    return RHO**lags


class ExactBlankets(torch.nn.Module):
    """The exact denoiser of the AR(1) prior on blankets ``(n, K, 1)``: ``C (C + s^2 I)^-1 x``."""

    def __init__(self, size: int):
        super().__init__()
        self.cov = torch.as_tensor(ar1(size), dtype=torch.float64)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        s = float(sigma.reshape(-1)[0])
        eye = torch.eye(len(self.cov), dtype=torch.float64)
        matrix = torch.linalg.solve(self.cov + s * s * eye, self.cov).T
        return torch.einsum("kj,njd->nkd", matrix, x.double())


def output_covariance(name: str, config: dict, steps: int, plan: BlanketPlan) -> np.ndarray:
    """The sampler's exact output covariance: its code run on the basis, float64."""
    blankets = BlanketDenoiser(ExactBlankets(plan.blanket_size), plan)
    dates = torch.zeros(plan.padded_size, 4, dtype=torch.long)
    sampler = make_sampler(
        name, lambda x, s: blankets(x, s, dates), make_schedule("rectified"), steps, **config
    )
    size = plan.padded_size
    basis = torch.eye(size, dtype=torch.float64).reshape(size, size, 1)
    x_map = sampler.run(basis, lambda: None, lambda i, n: None)[..., 0].numpy().T
    return float(sampler.sigmas[0]) ** 2 * x_map @ x_map.T


def error(cov: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(cov - reference) / np.linalg.norm(reference))


def table(title: str, plan: BlanketPlan, reference: np.ndarray, budgets: list[int]) -> None:
    print(f"\n{title}")
    print(f"{'sampler':<9} {'grid':<10} " + " ".join(f"{b:>8}" for b in budgets))
    for grid in GRIDS:
        for label, (config, per_step) in SAMPLERS.items():
            name = label.split("-")[0]
            cells = []
            for budget in budgets:
                steps = max(1, budget // per_step)
                cov = output_covariance(name, {**config, "grid": grid}, steps, plan)
                cells.append(f"{error(cov, reference):8.1e}")
            print(f"{label:<9} {grid:<10} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="8,16,32,64")
    budgets = [int(b) for b in parser.parse_args().budgets.split(",")]
    one = BlanketPlan(16, 16, 0)
    table(
        "one blanket, K = T = 16: error against the true prior (denoiser evaluations)",
        one,
        ar1(16),
        budgets,
    )
    composed = BlanketPlan(24, 8, 4)
    reference = output_covariance("lms", {"order": 3}, 512, composed)
    table(
        "composed, K = 8, O = 4, T = 24: error against lms at 512 steps",
        composed,
        reference,
        budgets,
    )
    print("\ngoal: a sampler and grid at <= 16 evaluations with an error <= lms at 64")


if __name__ == "__main__":
    main()
