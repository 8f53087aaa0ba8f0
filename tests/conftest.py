"""Shared test options and fixtures.

``--device`` runs the device-aware tests on another device (e.g. ``cuda`` on a GPU machine);
the default is the CPU. Torch uses one thread in tests so results are reproducible bit for bit.
"""

from __future__ import annotations

import os

import pytest
import torch

# Shared session fixtures: `slurm_cluster` (a real single-node SLURM on loopback) and the one
# real Prefect server per test process with its tiny synthetic world.
pytest_plugins = ["tests.slurm_local", "tests.prefect_fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for device-aware tests")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return torch.device(name)


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    torch.set_num_threads(int(os.environ.get("PRIORFLOW_TORCH_THREADS", "1")))


def in_ci() -> bool:
    """True under CI (CI=true): tests that need real services must fail there, not skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for ``pytest -n N --dist loadgroup`` (pytest-xdist, ``make test``).

    A module's tests stay in one worker (its module fixtures, e.g. a flow run, are made once),
    and every test that uses the local SLURM cluster runs in the same worker: the cluster is one
    per machine. Without xdist the groups change nothing.
    """
    for item in items:
        uses_slurm = "slurm_cluster" in getattr(item, "fixturenames", ())
        group = "slurm" if uses_slurm else item.module.__name__ if item.module else item.nodeid
        item.add_marker(pytest.mark.xdist_group(group))
