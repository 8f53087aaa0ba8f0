"""scripts/slurm-local.sh: a real single-node SLURM cluster with fake GPUs (GRES).

The session cluster comes from ``tests.slurm_local.slurm_cluster``; the start/stop test runs a
second, private cluster (own state directory and ports) so that it never stops the shared one.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm_local import SCRIPT, LocalSlurm, require_slurm, script, slurm_cluster

pytestmark = pytest.mark.integration

__all__ = ["slurm_cluster"]  # the fixture, imported for this module


def _env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a job's ``env`` output."""
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {key: value for key, sep, value in pairs if sep}


def _wait_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)


def _wait_state(cluster: LocalSlurm, job: str, state: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = cluster.run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip()
        if seen == state:
            break
        time.sleep(0.1)
    return seen


def _pid_alive(pid: int) -> bool:
    """A live process (a zombie is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _free_port_pair() -> int:
    """A port p with p and p+1 free on loopback (slurmctld and slurmd)."""
    for _ in range(100):
        port = random.randrange(20000, 40000, 2)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def test_missing_packages_is_one_line(tmp_path):
    """Without the slurm clients, start names the packages and the apt-get line, exit 3."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "realpath"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT), "start"],
        env={"PATH": str(bin_dir), "PRIORFLOW_SLURM_DIR": str(tmp_path / "slurm")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "slurm-wlm" in lines[0] and "sbatch" in lines[0]
    assert "apt-get install -y slurm-wlm munge" in lines[0]
    assert not (tmp_path / "slurm").exists()  # nothing made before the check


def test_status_of_running_cluster(slurm_cluster):
    result = script("status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"node \S+: (idle|mixed|allocated|completing)", result.stdout)
    assert f"export SLURM_CONF={slurm_cluster.conf}" in result.stdout
    assert script("env").stdout.strip() == f"export SLURM_CONF={slurm_cluster.conf}"
    partitions = slurm_cluster.run("sinfo", "-h", "-o", "%P").stdout.split()
    assert partitions == ["debug*", "gpu"]


def test_sbatch_gres_sees_gpus(slurm_cluster, tmp_path):
    """--gres=gpu:1 gives CUDA_VISIBLE_DEVICES=0; a concurrent job gets GPU 1; none without."""
    assert slurm_cluster.wait_empty() == [], "jobs left over from another test"
    first, second, plain = (tmp_path / f"{name}.env" for name in ("first", "second", "plain"))
    # The first job holds its GPU until the second has run (at most 60 s), so they overlap
    # however slowly the second starts on a loaded machine.
    hold = f"env; for i in $(seq 120); do [ -s {second} ] && break; sleep 0.5; done"
    job = slurm_cluster.run(
        "sbatch", "--parsable", "--gres=gpu:1", "-o", str(first), "--wrap", hold
    ).stdout.strip()
    assert _wait_state(slurm_cluster, job, "RUNNING") == "RUNNING"
    slurm_cluster.run("sbatch", "-p", "gpu", "--gres=gpu:1", "-o", str(second), "--wrap", "env")
    slurm_cluster.run("sbatch", "-o", str(plain), "--wrap", "env")
    for path in (first, second, plain):
        _wait_file(path)
    a, b, c = _env_file(first), _env_file(second), _env_file(plain)
    assert a["SLURM_JOB_ID"] == job
    assert (a["CUDA_VISIBLE_DEVICES"], a["SLURM_JOB_GPUS"]) == ("0", "0")
    assert (b["CUDA_VISIBLE_DEVICES"], b["SLURM_JOB_GPUS"]) == ("1", "1")
    assert a["SLURM_GPUS_ON_NODE"] == b["SLURM_GPUS_ON_NODE"] == "1"
    assert b["SLURM_JOB_PARTITION"] == "gpu" and c["SLURM_JOB_PARTITION"] == "debug"
    assert "CUDA_VISIBLE_DEVICES" not in c and "SLURM_JOB_GPUS" not in c
    assert slurm_cluster.wait_empty() == []


def test_start_stop_idempotent(tmp_path):
    """start twice (the second only reports), stop twice (the second is a no-op), restart."""
    require_slurm()
    state = tmp_path / "slurm"
    env = {"PRIORFLOW_SLURM_DIR": str(state), "PRIORFLOW_SLURM_PORT": str(_free_port_pair())}
    conf = state / "etc" / "slurm.conf"
    client = LocalSlurm(conf=str(conf))

    def pids() -> dict[str, int]:
        return {
            name: int((state / "run" / f"{name}.pid").read_text())
            for name in ("munged", "slurmctld", "slurmd")
        }

    try:
        assert script("status", env=env).returncode == 1  # nothing yet
        first = script("start", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "started" in first.stdout and f"export SLURM_CONF={conf}" in first.stdout
        running = pids()
        assert all(_pid_alive(pid) for pid in running.values())
        assert "Gres=gpu:2" in conf.read_text()
        assert (state / "dev" / "nvidia1").is_char_device()
        assert oct((state / "munge" / "munge.key").stat().st_mode)[-3:] == "400"

        again = script("start", env=env)
        assert again.returncode == 0 and "already running" in again.stdout, again.stderr
        assert pids() == running
        refused = script("start", "--gpus", "3", env=env)
        assert refused.returncode == 1 and "stop" in refused.stderr
        assert script("status", env=env).returncode == 0

        # a job still running is cancelled by stop
        client.run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300")
        stopped = script("stop", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped" in stopped.stdout
        assert not any(_pid_alive(pid) for pid in running.values())  # zombies do not count
        assert script("status", env=env).returncode == 1
        twice = script("stop", env=env)
        assert twice.returncode == 0 and "not running" in twice.stdout

        restarted = script("start", "--gpus", "1", env=env)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "Gres=gpu:1" in conf.read_text()
        node = client.run("scontrol", "show", "node").stdout
        assert "Gres=gpu:1" in node and "State=IDLE" in node
        assert client.job_ids() == []  # slurmctld -c: a clean state
        running = pids()
    finally:
        script("stop", env=env)
    assert not any(_pid_alive(pid) for pid in running.values())


def test_usage_errors():
    for args in (["bogus"], ["start", "--gpus", "x"], []):
        result = subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, timeout=30, env=os.environ
        )
        assert result.returncode in (1, 2), (args, result.stderr)
        assert result.stderr.strip()
