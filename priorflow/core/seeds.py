"""Stable per-job seeds.

Every job (trajectory size, start date, member) draws its noise from its own
``torch.Generator`` seeded by :func:`job_seed`. The seed is a hash of the job's identity, so
the same job yields the same trajectory on any retry, worker or order; Python's ``hash`` is
salted per process and must not be used.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import torch

_SEED_BITS = 63


def job_seed(run_seed: int, trajectory_size: int, start_date: datetime, member: int) -> int:
    """Return a 63-bit seed derived from SHA-256 of the job identity.

    Arguments:
        run_seed: the run's seed (change it to get new samples).
        trajectory_size: requested number of states ``T0``.
        start_date: start date and hour of the trajectory.
        member: ensemble member index.
    """
    key = f"priorflow/v1|{int(run_seed)}|{int(trajectory_size)}|{start_date:%Y-%m-%dT%H}|{int(member)}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _SEED_BITS)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``.

    Noise is drawn on the CPU and moved to the compute device, so a job's trajectory does not
    depend on which device (or how many devices) evaluates its denoiser.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator
