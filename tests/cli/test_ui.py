"""After ``priorflow run`` stops the server it started, ``priorflow ui --port`` (the command the
run prints) serves the run again: its printed link opens in a headless browser."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.server import api_healthy, pid_alive
from tests.browser import browse, chromium  # noqa: F401  (fixture)
from tests.prefect_fixtures import write_run_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRIORFLOW = Path(sys.executable).with_name("priorflow")


def test_a_stopped_runs_link_opens_again_with_priorflow_ui(tiny_world, tmp_path, chromium):  # noqa: F811
    config = write_run_config(
        tmp_path / "cfg" / "run.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        output_dir=str(tmp_path / "runs"),
    )
    home = tmp_path / ".prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PRIORFLOW_PREFECT_HOME": str(home), "PRIORFLOW_TORCH_THREADS": "1"}
    done = subprocess.run(
        [str(PRIORFLOW), "run", str(config), "--run-id", "browse"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    link = re.search(r"flow run  ((http://127\.0\.0\.1:(\d+))/runs/flow-run/\S+)", done.stdout)
    assert link, done.stdout
    assert f"priorflow ui --port {link[3]}" in done.stdout
    assert not api_healthy(f"{link[2]}/api", timeout=1.0)  # the link is dead for now

    served = subprocess.run(
        [str(PRIORFLOW), "ui", "--port", link[3]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    pid = None
    try:
        assert served.returncode == 0, served.stdout + served.stderr
        record = json.loads((home / "server.json").read_text())
        pid = record["pid"]
        assert f"prefect UI  {link[2]}" in served.stdout
        assert f"kill {pid}" in served.stderr
        assert api_healthy(f"{link[2]}/api", timeout=5.0)
        dom = browse(chromium, link[1], tmp_path / "profile", "--dump-dom")
        assert "prior-generation" in dom and "Completed" in dom, dom[-2000:]
    finally:
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
