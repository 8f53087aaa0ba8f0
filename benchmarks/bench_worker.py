"""Generation inside a Dask worker against the same call outside it, as ratios.

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``; with it glibc stops
adapting its mmap threshold, and every tensor over 128 kB is mapped and unmapped on each use.
This measures one member of the demo model (reference backbone, K = 8, T = 72, lms) four ways,
interleaved, medians of ``--repeats``:

- ``bare``: ``generate_trajectory`` in this process (the reference);
- ``worker, dask's default``: in a LocalCluster worker with Dask's default environment;
- ``worker, priorflow``: in a worker of ``flows.runners.local_cluster`` (priorflow's settings),
  through ``priorflow.run.environment.tune_allocator`` as a job calls it.

Goal: worker, priorflow / bare <= 1.05.

Usage: ``python benchmarks/bench_worker.py [--repeats R] [--steps S]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from datetime import datetime

import torch

from priorflow.models.loading import load_model


def one_member(steps: int, tune: bool) -> tuple[float, int]:
    """Seconds and minor page faults of one member (run where this function is called)."""
    from priorflow.core.generate import generate_trajectory
    from priorflow.run.environment import tune_allocator

    torch.set_num_threads(1)
    if tune:
        tune_allocator()
    model = load_model("models/reference")
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    began = time.perf_counter()
    generate_trajectory(model, 72, datetime(2000, 4, 3), seed=1, overlap=4, steps=steps)
    seconds = time.perf_counter() - began
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from flows.runners import local_cluster

    torch.set_num_threads(1)
    plain = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    ours = local_cluster(n_workers=1, torch_threads=1)
    ways = {
        "bare": lambda: one_member(args.steps, tune=False),
        "worker, dask's default": lambda: plain_client.submit(
            one_member, args.steps, False, pure=False
        ).result(),
        "worker, priorflow": lambda: ours_client.submit(
            one_member, args.steps, True, pure=False
        ).result(),
    }
    with plain, ours, Client(plain) as plain_client, Client(ours) as ours_client:
        for way in ways.values():  # warm up: imports, the model file in the page cache
            way()
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        faults: dict[str, list[int]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, way in ways.items():
                s, f = way()
                seconds[name].append(s)
                faults[name].append(f)
    bare = statistics.median(seconds["bare"])
    print(f"one member: reference backbone, T=72, K=8, lms {args.steps} steps, 1 thread;")
    print(f"medians of {args.repeats} interleaved runs")
    print(f"{'where':<24} {'seconds':>8} {'/ bare':>7} {'page faults':>12}")
    for name in ways:
        median = statistics.median(seconds[name])
        print(
            f"{name:<24} {median:8.3f} {median / bare:6.2f}x"
            f" {int(statistics.median(faults[name])):12,d}"
        )
    print("goal: worker, priorflow / bare <= 1.05")


if __name__ == "__main__":
    main()
