"""A real local Prefect server for the embedded default.

Prefect's ephemeral mode (no ``PREFECT_API_URL``) starts a temporary server in the flow process
*and in every Dask worker process*, all on one SQLite file; on a small machine they time out and
leave orphaned servers behind. So ``priorflow run`` always talks to a real server:

1. ``PREFECT_API_URL`` (environment variable or Prefect profile) set and answering
   ``/api/health``: use it, start nothing.
2. A server this module kept running earlier (``<home>/server.json``) still answering: reuse it.
3. Otherwise start ``prefect server start --host 127.0.0.1 --port P`` as a subprocess with
   ``PREFECT_HOME=<home>`` (its SQLite database and log live there), analytics off, wait for
   ``/api/health``, and stop it on exit (one SIGTERM, then SIGKILL after a grace period) unless
   ``keep=True``.

In every case ``PREFECT_API_URL`` is exported to this process (environment and Prefect's settings
context) and hence to the Dask workers it spawns.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from priorflow.atomic import write_text
from priorflow.errors import ConfigError, PriorflowError

PREFECT_HOME_ENV = "PRIORFLOW_PREFECT_HOME"
SERVER_RECORD = "server.json"
SERVER_LOG = "server.log"
LOOPBACK = "127.0.0.1"

# Environment of the server subprocess: offline, no telemetry, no promotional banners.
SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
}


@dataclass(frozen=True)
class PrefectServer:
    """Where the Prefect API is and whether this process owns the server behind it.

    Attributes:
        api_url: e.g. ``http://127.0.0.1:4200/api``.
        pid: the server's process id when started or reused from ``server.json``, else None.
        started: True when this context started the server (it stops it unless kept).
        home: the ``PREFECT_HOME`` of a server started here, else None.
    """

    api_url: str
    pid: int | None = None
    started: bool = False
    home: Path | None = None

    @property
    def ui_url(self) -> str:
        """The UI's address: the API URL without its ``/api`` suffix."""
        return ui_url(self.api_url)

    def flow_run_url(self, flow_run_id: object) -> str:
        """The UI page of one flow run."""
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}"

    @property
    def port(self) -> int | None:
        """The API's port (``None`` when the URL names none)."""
        from urllib.parse import urlsplit

        return urlsplit(self.api_url).port


def prefect_home() -> Path:
    """Where a local Prefect server keeps its database: ``$PRIORFLOW_PREFECT_HOME`` or ``.prefect``."""
    return Path(os.environ.get(PREFECT_HOME_ENV) or ".prefect").resolve()


def ui_url(api_url: str) -> str:
    """``http://host:port/api`` -> ``http://host:port``."""
    url = api_url.rstrip("/")
    return url[: -len("/api")] if url.endswith("/api") else url


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when ``GET <api_url>/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment, else from the active Prefect profile."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    from prefect.settings import get_current_settings  # profile / settings context

    return get_current_settings().api.url or None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; one that is our child is reaped here)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_record(home: Path) -> dict | None:
    """The record of a kept server (``{"pid", "api_url"}``) if it is alive and healthy."""
    path = Path(home) / SERVER_RECORD
    try:
        record = json.loads(path.read_text())
        pid, url = int(record["pid"]), str(record["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid_alive(pid) and api_healthy(url):
        return {"pid": pid, "api_url": url}
    return None


def _write_record(home: Path, pid: int, api_url: str) -> Path:
    return write_text(
        Path(home) / SERVER_RECORD, json.dumps({"pid": pid, "api_url": api_url}) + "\n"
    )


def start_server(
    home: Path, port: int | None = None, timeout: float = 120.0, die_with_parent: bool = True
) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` on loopback and wait until ``/api/health`` answers.

    The server runs in its own session (a Ctrl-C in the terminal does not reach it; this module
    stops it), with ``PREFECT_HOME=home`` and its output in ``home/server.log``.

    Returns:
        The process and its API URL. Raises :class:`PriorflowError` (with the log's last
        lines) if it exits or does not answer within ``timeout`` seconds.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://{LOOPBACK}:{port}/api"
    env = {
        **os.environ,
        **SERVER_ENV,
        "PREFECT_HOME": str(home),
        # The UI asks /ui-settings for its API; without these it points at the default port 4200.
        "PREFECT_SERVER_API_HOST": LOOPBACK,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": api_url,
    }
    # The server must not think it is a client of some other API.
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "prefect", "server", "start"]
    command += ["--host", LOOPBACK, "--port", str(port), "--analytics-off"]
    log_path = home / SERVER_LOG
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PriorflowError(
                    f"the local Prefect server exited with status {process.returncode} before "
                    f"it answered; see {log_path}: {_tail(log_path)}"
                )
            if api_healthy(api_url, timeout=1.0):
                return process, api_url
            time.sleep(0.25)
    except BaseException:  # interrupted while waiting: leave nothing running
        stop_server(process)
        raise
    stop_server(process)
    raise PriorflowError(
        f"the local Prefect server did not answer {api_url}/health within {timeout:.0f} s; "
        f"see {log_path}"
    )


def _die_with_parent() -> None:
    """In the server's process, before it runs: ask Linux to send it SIGTERM when the process
    that started it dies, however it dies (even SIGKILL), so no server is left behind (not for a
    server kept with ``keep=True``, which is meant to outlive the run)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not Linux: the server is stopped by the finally of the run
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def stop_server(process: subprocess.Popen | int, grace: float = 20.0) -> None:
    """Stop a server started by :func:`start_server`: one SIGTERM, wait, then SIGKILL.

    Signals go to the server's process group (it runs in its own session), so nothing it
    spawned is left behind.
    """
    pid = process if isinstance(process, int) else process.pid

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def gone() -> bool:
        if isinstance(process, subprocess.Popen):
            return process.poll() is not None
        return not pid_alive(pid)

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not gone():
        time.sleep(0.1)
    if not gone():
        send(signal.SIGKILL)
        if isinstance(process, subprocess.Popen):
            process.wait(timeout=10)


@contextlib.contextmanager
def use_api_url(api_url: str) -> Iterator[None]:
    """Point this process (and the processes it starts) at ``api_url`` for the block.

    Sets ``os.environ["PREFECT_API_URL"]`` (inherited by Dask workers) and, as Prefect reads its
    settings once at import, Prefect's settings context too.
    """
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


@contextlib.contextmanager
def ensure_local_server(
    home: Path, port: int | None = None, keep: bool = False, timeout: float = 120.0
) -> Iterator[PrefectServer]:
    """A Prefect API for the block: the configured one, a kept one, or a new local server.

    Arguments:
        home: the working area (``.prefect/`` of the project) for a server started here: its
            ``PREFECT_HOME`` (SQLite database), ``server.log`` and ``server.json``.
        port: the port for a new server (default: a free one).
        keep: leave a server started here running after the block, record it in
            ``home/server.json`` so later runs reuse it, and print how to stop it.
        timeout: seconds to wait for a new server to answer ``/api/health``.

    Raises:
        ConfigError: ``PREFECT_API_URL`` is set but does not answer.
    """
    configured = configured_api_url()
    if configured:
        if not api_healthy(configured, timeout=5.0):
            raise ConfigError(
                f"PREFECT_API_URL: {configured!r} does not answer at /health; start that "
                "Prefect server or unset PREFECT_API_URL to let priorflow start a local one"
            )
        with use_api_url(configured):
            yield PrefectServer(api_url=configured)
        return

    home = Path(home).resolve()
    record = read_record(home)
    if record is not None:
        with use_api_url(record["api_url"]):
            yield PrefectServer(api_url=record["api_url"], pid=record["pid"], home=home)
        return

    process, api_url = start_server(home, port=port, timeout=timeout, die_with_parent=not keep)
    server = PrefectServer(api_url=api_url, pid=process.pid, started=True, home=home)
    try:
        with use_api_url(api_url):
            yield server
    finally:
        if keep:
            _write_record(home, process.pid, api_url)
            print(
                f"Prefect server kept running at {server.ui_url} (pid {process.pid}); later "
                f"runs reuse it. Stop it with: kill {process.pid}",
                file=sys.stderr,
            )
        else:
            drain_prefect_clients()
            stop_server(process)


def drain_prefect_clients(timeout: float = 10.0) -> None:
    """Send the logs and events this process still holds to the API (before it goes away)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout, at_exit=False)
