"""The local Prefect server of the embedded default: start, health, export, stop, keep, reuse."""

from __future__ import annotations

import json
import os
import socket
import urllib.request

import pytest
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from flows.server import (
    SERVER_RECORD,
    PrefectServer,
    api_healthy,
    ensure_local_server,
    free_port,
    read_record,
    start_server,
    stop_server,
    ui_url,
)
from priorflow.errors import ConfigError, PriorflowError


@pytest.fixture
def no_api(monkeypatch):
    """No PREFECT_API_URL anywhere (environment or settings), whatever ran before."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_urls():
    assert ui_url("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200"
    assert ui_url("http://127.0.0.1:4200/api/") == "http://127.0.0.1:4200"
    server = PrefectServer(api_url="http://127.0.0.1:4200/api")
    assert server.flow_run_url("abc") == "http://127.0.0.1:4200/runs/flow-run/abc"


def test_nothing_answers_on_a_free_port():
    port = free_port()
    assert not api_healthy(f"http://127.0.0.1:{port}/api", timeout=0.5)
    assert not api_healthy("not a url")


def test_a_configured_url_that_does_not_answer_is_a_config_error(monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    with (
        pytest.raises(ConfigError, match="PREFECT_API_URL: .* does not answer"),
        ensure_local_server(tmp_path / ".prefect"),
    ):
        pass
    assert not (tmp_path / ".prefect").exists()  # nothing started, nothing written


@pytest.mark.integration
def test_start_export_and_stop(no_api, tmp_path):
    home = tmp_path / ".prefect"
    with ensure_local_server(home) as server:
        assert server.started and server.pid and server.home == home.resolve()
        assert server.api_url.startswith("http://127.0.0.1:")
        assert api_healthy(server.api_url)
        assert os.environ["PREFECT_API_URL"] == server.api_url  # inherited by Dask workers
        assert get_current_settings().api.url == server.api_url  # this process's Prefect
        assert (home / "prefect.db").exists()  # PREFECT_HOME inside the working area
        # the UI in a browser finds this server's API (not the default port 4200)
        with urllib.request.urlopen(f"{server.ui_url}/ui-settings", timeout=10) as reply:
            assert json.loads(reply.read())["api_url"] == server.api_url
        pid = server.pid
    assert not _alive(pid)
    assert not api_healthy(server.api_url, timeout=0.5)
    assert "PREFECT_API_URL" not in os.environ
    assert not (home / SERVER_RECORD).exists()


@pytest.mark.integration
def test_keep_records_the_server_and_a_later_run_reuses_it(no_api, tmp_path, capsys):
    home = tmp_path / ".prefect"
    with ensure_local_server(home, keep=True) as server:
        pid, url = server.pid, server.api_url
    try:
        assert _alive(pid) and api_healthy(url)
        assert f"kill {pid}" in capsys.readouterr().err
        assert json.loads((home / SERVER_RECORD).read_text()) == {"pid": pid, "api_url": url}
        with ensure_local_server(home) as again:  # reused, not started, not stopped
            assert (again.pid, again.api_url, again.started) == (pid, url, False)
        assert _alive(pid)
        # a configured PREFECT_API_URL that answers is used as it is
        os.environ["PREFECT_API_URL"] = url
        try:
            with ensure_local_server(tmp_path / "other") as configured:
                assert configured == PrefectServer(api_url=url)
        finally:
            del os.environ["PREFECT_API_URL"]
        assert not (tmp_path / "other").exists()
    finally:
        stop_server(pid)
    assert not _alive(pid)
    assert read_record(home) is None  # the record of a stopped server is stale


@pytest.mark.integration
def test_a_server_that_cannot_start_is_reported_with_its_log(no_api, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PriorflowError, match="server.log"):
            start_server(tmp_path / ".prefect", port=port, timeout=60)
    assert (tmp_path / ".prefect" / "server.log").exists()
