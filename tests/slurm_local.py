"""The local SLURM cluster for tests: ``scripts/slurm-local.sh`` as a pytest session fixture.

Import the fixture into a test module (``from tests.slurm_local import slurm_cluster``) or list
this module in the root conftest's ``pytest_plugins``. Without the slurm/munge binaries (or as a
non-root user) the tests that use it skip locally and FAIL under ``CI=true``.

The fixture starts the cluster (``scripts/slurm-local.sh start``; about half a second), exports
``SLURM_CONF`` for the session and stops the cluster at the end, unless it was running already
(another session or a person using it), in which case it leaves it running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import in_ci

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
#: ``hardware`` of a run on this cluster: two GPU workers in partition gpu, aggregation in debug.
SLURM_HARDWARE = {
    "backend": "slurm",
    "gpus_per_node": 2,
    "max_workers": 2,
    "scheduler_host": "127.0.0.1",
    "gen": {"cpus": 1, "ram": "2GB", "time": "0:10:00", "partition": "gpu", "gpus": 1},
    "aggregate": {"cpus": 1, "ram": "1GB", "time": "0:10:00", "partition": "debug"},
}
BINARIES = ("munged", "slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch", "scancel")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@dataclass(frozen=True)
class LocalSlurm:
    """A running local cluster: its ``slurm.conf`` and the environment clients need."""

    conf: str

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``SLURM_CONF``: for ``subprocess.run(..., env=...)``."""
        return {**os.environ, "SLURM_CONF": self.conf}

    def run(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run a SLURM client (``sbatch``, ``squeue``...) against this cluster; text output."""
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, check=check, **kwargs
        )

    def job_ids(self) -> list[str]:
        """The jobs squeue lists (pending, running, completing)."""
        out = self.run("squeue", "-h", "-o", "%i").stdout
        return out.split()

    def wait_empty(self, timeout: float = 120.0) -> list[str]:
        """Wait until squeue lists no job; return what is left (empty on success). The deadline is
        generous: on a loaded machine slurmd takes tens of seconds to end a cancelled job."""
        deadline = time.monotonic() + timeout
        while (jobs := self.job_ids()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return jobs


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name, path=_SEARCH_PATH) is None]


def require_slurm() -> None:
    """Skip (locally) or fail (under CI) when the local cluster cannot run here."""
    missing = missing_binaries()
    if missing:
        reason = (
            f"SLURM binaries missing: {' '.join(missing)} (apt-get install -y slurm-wlm munge)"
        )
    elif os.geteuid() != 0:
        reason = "the local SLURM cluster needs root (slurmd runs jobs as their user)"
    else:
        return
    if in_ci():
        pytest.fail(f"{reason}; .ci/run must provide it", pytrace=False)
    pytest.skip(reason)


def script(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """Run ``scripts/slurm-local.sh ARGS``; text output, no check."""
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> LocalSlurm:
    """The local SLURM cluster, started for the session; ``SLURM_CONF`` is exported."""
    require_slurm()
    was_running = script("status").returncode == 0
    started = script("start")
    if started.returncode != 0:
        pytest.fail(f"slurm-local.sh start failed:\n{started.stdout}{started.stderr}")
    line = script("env").stdout.strip()
    assert line.startswith("export SLURM_CONF="), line
    cluster = LocalSlurm(conf=line.removeprefix("export SLURM_CONF="))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", cluster.conf)
        yield cluster
    if not was_running:
        script("stop")
