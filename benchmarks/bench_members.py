"""Members per task: seconds per member when a task samples 1, 2, 4 or 8 members as one batch.

``members_per_task: B`` puts the blankets of ``B`` members in every backbone call
(``generate_trajectories``). This samples the same members of the demo model (reference
backbone, K = 8, T = 72, lms) in tasks of each size, interleaved, medians of ``--repeats``, and
prints seconds per member and the ratio to one member per task. It also prints how far a member
sampled in a batch is from the same member sampled alone (rounding of batched arithmetic only).

Usage: ``python benchmarks/bench_members.py [--repeats R] [--steps S] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta

import torch

from priorflow.core.generate import generate_trajectories
from priorflow.models.loading import load_model
from priorflow.run.environment import tune_allocator

MEMBERS = 8
PER_TASK = (1, 2, 4, 8)


def sample(model, starts, seeds, per_task: int, steps: int) -> tuple[float, list[torch.Tensor]]:
    """Seconds for all members in tasks of ``per_task``, and the members."""
    began = time.perf_counter()
    out: list[torch.Tensor] = []
    for i in range(0, len(seeds), per_task):
        batch = generate_trajectories(
            model, 72, starts[i : i + per_task], seeds[i : i + per_task], overlap=4, steps=steps
        )
        out.extend(t.latent for t in batch)
    return time.perf_counter() - began, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tune_allocator()  # as a job does
    model = load_model("models/reference")
    starts = [datetime(2000, 4, 3) + timedelta(days=17 * i) for i in range(MEMBERS)]
    seeds = list(range(1, MEMBERS + 1))
    seconds: dict[int, list[float]] = {b: [] for b in PER_TASK}
    members: dict[int, list[torch.Tensor]] = {}
    sample(model, starts[:1], seeds[:1], 1, 2)  # warm-up
    for _ in range(args.repeats):
        for per_task in PER_TASK:
            took, members[per_task] = sample(model, starts, seeds, per_task, args.steps)
            seconds[per_task].append(took / MEMBERS)

    print(f"{MEMBERS} members, T = 72, {args.steps} steps, {args.threads} torch thread(s)")
    print(f"{'members_per_task':>16} {'s/member':>9} {'ratio':>6} {'max |batch - alone|':>20}")
    base = statistics.median(seconds[1])
    for per_task in PER_TASK:
        median = statistics.median(seconds[per_task])
        diff = max(
            float((a - b).abs().max()) for a, b in zip(members[per_task], members[1], strict=True)
        )
        print(f"{per_task:>16} {median:>9.3f} {median / base:>6.2f} {diff:>20.1e}")


if __name__ == "__main__":
    main()
