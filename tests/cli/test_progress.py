"""The terminal progress of ``priorflow run``, as a user sees it.

In a terminal (a real one: tmux), the live display shows the members bar and one row per member
in flight with its sampler step; log lines stay above it, each on its own line; each member
that finishes gets a line; Prefect's telemetry notice does not appear. Through a pipe, plain
lines without escape codes. The in-flight rows come from the run's Prefect progress artifacts,
read from a real server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.progress import read_in_flight, status_line
from tests._runs import prepared_run
from tests.conftest import in_ci
from tests.prefect_fixtures import write_run_config

PRIORFLOW = Path(sys.executable).with_name("priorflow")
TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| ")


def test_status_line():
    assert status_line(3, 8, {}) == "members 3/8 done"
    flight = {"a": ("gen-6h-x-m0", 2, 5), "b": ("gen-6h-x-m1", 0, 5)}
    assert status_line(3, 8, flight) == (
        "members 3/8 done; in flight: gen-6h-x-m0 step 2/5, gen-6h-x-m1 step 0/5"
    )


@pytest.mark.integration
def test_in_flight_members_come_from_the_runs_progress_artifacts(
    prefect_api, tiny_world, tmp_path
):
    from prefect.artifacts import create_progress_artifact

    config = write_run_config(tmp_path / "run.yaml", tiny_world["model"], tiny_world["archive"])
    plan = prepared_run(config, run_id="flight").plan
    jobs = plan.jobs
    key = "priorflow-flight-{}-progress".format
    create_progress_artifact(40.0, key=key(jobs[0].name.lower()))  # before: an earlier attempt
    since = datetime.now(UTC)
    time.sleep(0.05)
    create_progress_artifact(40.0, key=key(jobs[0].name.lower()))  # 40 % of 5 steps
    create_progress_artifact(100.0, key=key(jobs[1].name.lower()))  # finished
    create_progress_artifact(0.0, key=key(jobs[2].name.lower()))
    create_progress_artifact(80.0, key="priorflow-other-run-gen-6h-2000-01-03t00-m0-progress")
    flight = read_in_flight(prefect_api, plan, since)
    assert flight == {jobs[0].name: (jobs[0].name, 2, 5), jobs[2].name: (jobs[2].name, 0, 5)}
    assert read_in_flight(prefect_api, plan, datetime.now(UTC)) == {}


def run_config(tiny_world, root: Path, steps: int) -> Path:
    return write_run_config(
        root / "cfg" / "run.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        diffusion={"num_steps": steps, "sampler": {"type": "lms"}},
        output_dir=str(root / "runs"),
    )


@pytest.mark.integration
def test_plain_lines_when_stdout_is_not_a_terminal(prefect_api, tiny_world, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PRIORFLOW_TORCH_THREADS": "1"}
    done = subprocess.run(
        [str(PRIORFLOW), "run", str(run_config(tiny_world, tmp_path, 5)), "--run-id", "plain"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("members ")]
    assert lines[0] == "members 0/8 done" and lines[-1].startswith("members 8/8 done"), lines
    counts = [int(line.split()[1].split("/")[0]) for line in lines]
    assert counts == sorted(set(counts))  # one line per change, in order
    assert "\x1b[" not in done.stdout and "━" not in done.stdout


def tmux() -> str:
    path = shutil.which("tmux")
    if path:
        return path
    reason = "tmux is not installed (apt-get install -y tmux)"
    if in_ci():
        pytest.fail(f"{reason}; .ci/run must provide it", pytrace=False)
    pytest.skip(reason)


@pytest.mark.integration
@pytest.mark.slow
def test_live_display_in_a_terminal(tiny_world, tmp_path):
    """``priorflow run`` in a 200x50 tmux terminal with its own local server and a fresh Prefect
    home (the telemetry notice's first run); the pane is captured while it runs."""
    binary = tmux()
    config = run_config(tiny_world, tmp_path, 400)
    socket = str(tmp_path / "tmux.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DO_NOT_TRACK"))}
    env |= {
        "PRIORFLOW_PREFECT_HOME": str(tmp_path / ".prefect"),
        "PREFECT_HOME": str(tmp_path / "client-home"),
        "PRIORFLOW_TORCH_THREADS": "1",
        "TERM": "xterm-256color",
    }
    command = f"{PRIORFLOW} run {config} --run-id live; echo EXIT=$?; sleep 60"
    subprocess.run(
        [binary, "-S", socket, "new-session", "-d", "-x", "200", "-y", "50", command],
        env=env,
        cwd=tmp_path,
        check=True,
    )

    def capture() -> str:
        return subprocess.run(
            [binary, "-S", socket, "capture-pane", "-p", "-S", "-500"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    in_flight, text = False, ""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            text = capture()
            in_flight |= bool(re.search(r"^\s+gen-6h-\S+ .*━.* \d+/400", text, re.MULTILINE))
            if "EXIT=" in text:
                break
            time.sleep(0.3)
    finally:
        subprocess.run([binary, "-S", socket, "kill-server"], check=False)
    assert "EXIT=0" in text, text
    lines = text.splitlines()
    assert in_flight, "no member in flight was shown with its sampler step"
    assert sum(line.startswith("done gen-") for line in lines) == 8, text
    assert any(re.match(r"^members\s+━+\s+8/8", line) for line in lines), text
    for line in lines:
        if "| INFO" in line or "| WARNING" in line:
            assert TIMESTAMP.match(line), f"a log line not on a line of its own: {line!r}"
        assert not ("━" in line and "|" in line), line
    assert "anonymous usage data" not in text
    assert "priorflow ui --port" in text
