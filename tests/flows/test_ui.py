"""The Prefect UI in a real browser: headless Chromium on the deployment runs' pages.

The flow run of ``prior-generation/on-demand`` (``tests.deploy_fixtures``) is opened in the UI
(v1 at ``/``, v2 at ``/v2``); the rendered DOM (``--dump-dom``) must show the named task runs
(``gen-6h-2000-01-03T00-m0``...), the run's artifacts by key, and the nightly run's prior-check
report with its plots embedded. One screenshot of the flow-run page is taken (a PNG to look at).
Without Chromium the tests skip here and fail under CI (``apt-get install -y chromium``).
"""

from __future__ import annotations

import pytest

from tests.browser import browse, chromium
from tests.deploy_fixtures import (
    api_post,
    artifacts,
    deployed,
    nightly_run,
    on_demand_run,
    prefect_server,
    task_runs,
    wait_final,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["chromium", "deployed", "nightly_run", "on_demand_run", "prefect_server"]  # fixtures


def test_flow_run_page_shows_named_task_runs_and_artifacts(
    chromium, deployed, on_demand_run, tmp_path
):
    flow_run_id = on_demand_run["flow_run_id"]
    assert wait_final(deployed, flow_run_id)["state"]["type"] == "COMPLETED"
    names = sorted(t["name"] for t in task_runs(deployed.api_url, flow_run_id))
    generation = [n for n in names if n.startswith("gen-")]
    assert len(generation) == 4
    keys = sorted(a["key"] for a in artifacts(deployed.api_url, flow_run_id) if a["key"])
    assert "priorflow-deployed-1-6h-members" in keys

    # v1 (the default UI): the run, its flow and state, and the task runs' logs by name
    page = f"{deployed.ui_url}/runs/flow-run/{flow_run_id}"
    dom = browse(chromium, page, tmp_path / "profile", "--dump-dom")
    assert "prior-generation" in dom and "Completed" in dom, dom[-2000:]
    for name in generation:
        assert name in dom, name

    # v2: the task-runs tab lists every task run by name, the artifacts tab every key
    v2 = f"{deployed.ui_url}/v2/runs/flow-run/{flow_run_id}"
    dom = browse(chromium, f"{v2}?tab=TaskRuns", tmp_path / "profile", "--dump-dom")
    for name in names:
        assert f">{name}<" in dom, name
    dom = browse(chromium, f"{v2}?tab=Artifacts", tmp_path / "profile", "--dump-dom")
    for key in keys:
        assert key in dom, key

    shot = tmp_path / "flow-run.png"
    browse(chromium, page, tmp_path / "profile", f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_check_report_artifact_shows_its_plots(chromium, deployed, nightly_run, tmp_path):
    flow_run_id = nightly_run["flow_run_id"]
    assert wait_final(deployed, flow_run_id)["state"]["type"] == "COMPLETED"
    key = f"priorflow-{nightly_run['run_id']}-check-report"
    found = api_post(deployed.api_url, "artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
    assert found and "data:image/png;base64," in found[0]["data"]
    dom = browse(
        chromium,
        f"{deployed.ui_url}/artifacts/artifact/{found[0]['id']}",
        tmp_path / "profile",
        "--dump-dom",
    )
    assert "Prior check" in dom, dom[-2000:]
    assert dom.count('src="data:image/png;base64,') >= 2, "the report's plots are not shown"
