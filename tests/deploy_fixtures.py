"""A real Prefect deployment setup for tests: ``prefect server start``, a work pool, the repo's
``prefect.yaml`` deployed, and a process worker, driven through Prefect's own CLI.

- ``prefect_server`` (session): ``prefect server start`` on loopback (UI included) with its own
  ``PREFECT_HOME`` in a temporary folder (:func:`flows.server.start_server`); stopped at the end.
- ``deployed`` (session): ``prefect work-pool create priorflow --type process``,
  ``prefect deploy --all --no-prompt`` from the repository, and ``prefect worker start`` (its
  SIGINT reset to the default so that one SIGTERM stops it; polling every second).
- ``on_demand_run`` (session): ``prefect deployment run 'prior-generation/on-demand' --watch`` on a
  tiny config (the tiny world's exact model and archive), shared by the deployment and UI tests.
- ``nightly_run`` (session): ``prior-generation/nightly`` (generation + prior check) on the
  shipped nightly config made tiny through ``overrides``, with thresholds a tiny ensemble meets.

Every CLI call gets its environment explicitly (:attr:`DeploySetup.env`), so this server never
mixes with the in-process test server of ``tests.prefect_fixtures``. The API is read back over
plain HTTP (:func:`api_post`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
POOL = "priorflow"
PREFECT = [sys.executable, "-m", "prefect"]

_SHARED: dict[str, Any] = {}


@dataclass
class DeploySetup:
    """A running server (and, once deployed, a worker)."""

    api_url: str
    home: Path
    env: dict[str, str]
    worker: subprocess.Popen | None = None
    worker_log: Path | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def prefect(
        self, *args: str, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run ``prefect ARGS`` from the repository root against this server."""
        result = subprocess.run(
            [*PREFECT, *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"prefect {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result


def api_post(api_url: str, path: str, body: dict | None = None) -> Any:
    """``POST <api_url>/<path>`` with a JSON body; the decoded JSON answer."""
    request = urllib.request.Request(
        f"{api_url}/{path.lstrip('/')}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read() or b"null")


def api_get(api_url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{api_url}/{path.lstrip('/')}", timeout=30) as reply:
        return json.loads(reply.read() or b"null")


def flow_run_id_from(output: str) -> str:
    """The flow run id ``prefect deployment run`` prints (``UUID: ...``)."""
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, f"no flow run id in:\n{output[-2000:]}"
    return match.group(1)


def task_runs(api_url: str, flow_run_id: str) -> list[dict]:
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}
    return api_post(api_url, "task_runs/filter", body)


def artifacts(api_url: str, flow_run_id: str) -> list[dict]:
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    return api_post(api_url, "artifacts/filter", body)


def client_env(api_url: str, home: Path) -> dict[str, str]:
    """The environment of every Prefect CLI call, worker and flow run of this setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(home / "client"),
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_CLI_PROMPT": "false",
            "DO_NOT_TRACK": "1",
            "PRIORFLOW_TORCH_THREADS": "1",
            "COLUMNS": "200",
        }
    )
    return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeploySetup]:
    """``prefect server start`` on loopback with a private ``PREFECT_HOME`` (UI included)."""
    if "server" in _SHARED:
        yield _SHARED["server"]
        return
    from flows.server import start_server, stop_server

    home = tmp_path_factory.mktemp("deploy-home")
    process, api_url = start_server(home / "server", timeout=120)
    setup = DeploySetup(api_url=api_url, home=home, env=client_env(api_url, home))
    _SHARED["server"] = setup
    try:
        yield setup
    finally:
        _SHARED.pop("server", None)
        stop_worker(setup)
        stop_server(process)


def start_worker(setup: DeploySetup) -> subprocess.Popen:
    """``prefect worker start --pool priorflow``, SIGINT reset so one SIGTERM stops it."""
    log = setup.home / "worker.log"
    handle = open(log, "ab")  # noqa: SIM115  (closed with the worker)

    def reset_signals() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", POOL, "--name", "test-worker"],
        cwd=REPO,
        env=setup.env,
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        preexec_fn=reset_signals,
        start_new_session=True,
    )
    handle.close()
    setup.worker, setup.worker_log = process, log
    return process


def stop_worker(setup: DeploySetup, grace: float = 20.0) -> None:
    """One SIGTERM to the worker's process group; SIGKILL after ``grace`` seconds."""
    process = setup.worker
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def deployed(prefect_server: DeploySetup) -> DeploySetup:
    """The work pool, every deployment of prefect.yaml, and a running worker."""
    if "deployed" in _SHARED:
        return _SHARED["deployed"]
    setup = prefect_server
    setup.outputs["pool"] = setup.prefect("work-pool", "create", POOL, "--type", "process").stdout
    deploy = setup.prefect("deploy", "--all", "--no-prompt", timeout=240)
    setup.outputs["deploy"] = deploy.stdout + deploy.stderr
    start_worker(setup)
    _SHARED["deployed"] = setup
    return setup


def run_deployment(
    setup: DeploySetup, name: str, params: dict[str, Any], timeout: float = 240
) -> tuple[subprocess.CompletedProcess, str]:
    """``prefect deployment run NAME --params JSON --watch``: the result and the flow run id."""
    result = setup.prefect(
        "deployment",
        "run",
        name,
        "--params",
        json.dumps(params),
        "--watch",
        "--watch-interval",
        "1",
        "--watch-timeout",
        str(int(timeout)),
        timeout=timeout + 30,
        check=False,
    )
    return result, flow_run_id_from(result.stdout + result.stderr)


def flow_run(setup: DeploySetup, flow_run_id: str) -> dict:
    return api_get(setup.api_url, f"flow_runs/{flow_run_id}")


def wait_final(setup: DeploySetup, flow_run_id: str, timeout: float = 60) -> dict:
    """The flow run once its state is final (``--watch`` may return a moment before)."""
    deadline = time.monotonic() + timeout
    while True:
        run = flow_run(setup, flow_run_id)
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        if time.monotonic() > deadline:
            return run
        time.sleep(0.5)


def tiny_deploy_config(path: Path, world: dict[str, Path], **changes: Any) -> Path:
    """A tiny run config for deployment runs: size 6 (K=4, overlap 1), 2 dates x 2 members."""
    from tests.prefect_fixtures import write_run_config

    settings: dict[str, Any] = {"trajectory_sizes": "6"} | changes
    return write_run_config(path, world["model"], world["archive"], **settings)


@pytest.fixture(scope="session")
def on_demand_run(deployed: DeploySetup, tiny_world, tmp_path_factory) -> dict[str, Any]:
    """``prior-generation/on-demand`` on a tiny config, watched to its end (once per session)."""
    if "on_demand" in _SHARED:
        return _SHARED["on_demand"]
    root = tmp_path_factory.mktemp("on-demand")
    config = tiny_deploy_config(root / "run.yaml", tiny_world)
    began = time.monotonic()
    result, flow_run_id = run_deployment(
        deployed,
        "prior-generation/on-demand",
        {"config_path": str(config), "run_id": "deployed-1"},
    )
    record = {
        "result": result,
        "flow_run_id": flow_run_id,
        "run_dir": root / "runs" / "deployed-1",
        "config": config,
        "seconds": time.monotonic() - began,
    }
    _SHARED["on_demand"] = record
    return record


# Thresholds a 2-date x 2-member run of the tiny exact model meets (the check's defaults are
# calibrated for the demo's 72 states x 3 dates x 2 members).
LOOSE_CHECK = [
    "check.max_bias=2.0",
    "check.min_std_ratio=0.2",
    "check.max_std_ratio=5.0",
    "check.min_ssr=0.05",
    "check.max_ssr=20.0",
    "check.max_crps_ratio=5.0",
    "check.max_acf_error=2.0",
    "check.max_seam_index=20.0",
    "check.max_spectrum_error=10.0",
    "check.min_diurnal_ratio=0.0",
    "check.max_diurnal_ratio=100.0",
    "check.max_diurnal_phase_hours=12.0",
    "check.max_lag=3",
]


def tiny_nightly_overrides(world: dict[str, Path], output_dir: Path) -> list[str]:
    """``configs/nightly.yaml`` made tiny through overrides (as a person would in the UI)."""
    return [
        f"model_path={world['model']}",
        f"archive={world['archive']}",
        f"output_dir={output_dir}",
        'trajectory_sizes="6"',
        'start_dates=["2000-01-03 0h", "2000-01-10 6h"]',
        "blanket_overlap=1",
        "diffusion.num_steps=5",
        "num_samples_per_date=2",
        "check.learned=false",  # the tiny archive holds too few windows per date for it
        *LOOSE_CHECK,
    ]


@pytest.fixture(scope="session")
def nightly_run(deployed: DeploySetup, tiny_world, tmp_path_factory) -> dict[str, Any]:
    """``prior-generation/nightly`` with the nightly config made tiny, watched to its end."""
    if "nightly" in _SHARED:
        return _SHARED["nightly"]
    from datetime import datetime

    output_dir = tmp_path_factory.mktemp("nightly") / "runs"
    overrides = tiny_nightly_overrides(tiny_world, output_dir)
    run_id = f"nightly-{datetime.now():%Y%m%d}"  # the config's run_id template, tonight
    result, flow_run_id = run_deployment(
        deployed, "prior-generation/nightly", {"overrides": overrides}
    )
    record = {
        "result": result,
        "flow_run_id": flow_run_id,
        "overrides": overrides,
        "run_id": run_id,
        "run_dir": output_dir / run_id,
    }
    _SHARED["nightly"] = record
    return record
