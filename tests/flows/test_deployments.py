"""The deployments of prefect.yaml, end to end, through Prefect's own CLI.

A real ``prefect server start`` on loopback, ``prefect work-pool create``, ``prefect deploy --all``
from the repository, a process worker, then:

- ``prior-generation/on-demand`` on a tiny config ends Completed and its store exists;
- ``prefect deployment inspect 'prior-generation/nightly'`` shows the cron schedule;
- ``prior-generation/nightly`` (generation + prior check, a ``nightly-YYYYMMDD`` run) completes
  with the check's artifacts; rerun on the same run with impossible thresholds it ends Failed,
  the reasons in its message;
- ``prior-check/on-demand`` without ``run_dir`` checks the newest finished run of its
  ``output_dir``, and fails in one line where there is none.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

from priorflow.evaluation.check_folders import latest_check, list_checks
from tests.deploy_fixtures import (
    LOOSE_CHECK,
    artifacts,
    deployed,
    nightly_run,
    on_demand_run,
    prefect_server,
    run_deployment,
    task_runs,
    wait_final,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["deployed", "nightly_run", "on_demand_run", "prefect_server"]  # fixtures


def test_every_deployment_is_created(deployed):
    out = deployed.prefect("deployment", "ls").stdout
    for name in (
        "prior-generation/on-demand",
        "prior-generation/nightly",
        "prior-check/on-demand",
    ):
        assert name in out, out


def test_on_demand_run_completes_with_its_store(on_demand_run, deployed):
    result = on_demand_run["result"]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "COMPLETED" in output.upper()
    run = wait_final(deployed, on_demand_run["flow_run_id"])
    assert run["state"]["type"] == "COMPLETED", run["state"]
    store = Path(on_demand_run["run_dir"]) / "prior.zarr"
    ds = xr.open_zarr(store, group="6h")
    assert ds.latent.shape[:3] == (2, 2, 6) and ds.attrs["aggregated"] is True
    assert ds.attrs["flow_run_id"] == on_demand_run["flow_run_id"]
    names = sorted(t["name"] for t in task_runs(deployed.api_url, on_demand_run["flow_run_id"]))
    assert [n for n in names if n.startswith("gen-")] == sorted(
        f"gen-6h-{d}-m{m}" for d in ("2000-01-03T00", "2000-01-10T06") for m in (0, 1)
    )


def test_nightly_schedule_is_the_night_cron(deployed):
    out = deployed.prefect("deployment", "inspect", "prior-generation/nightly").stdout
    assert "0 2 * * *" in out, out
    assert "Europe/Brussels" in out, out
    assert "'active': True" in out or '"active": true' in out, out


def test_nightly_generation_and_check_then_a_failing_check(deployed, nightly_run):
    flow_run_id, run_id = nightly_run["flow_run_id"], nightly_run["run_id"]
    run = wait_final(deployed, flow_run_id)
    output = nightly_run["result"].stdout + nightly_run["result"].stderr
    assert run["state"]["type"] == "COMPLETED", (run["state"], output[-3000:])
    run_dir = nightly_run["run_dir"]
    assert (run_dir / "prior.zarr").is_dir()
    assert (latest_check(run_dir) / "report.md").is_file()
    keys = {a["key"] for a in artifacts(deployed.api_url, flow_run_id) if a["key"]}
    assert {f"priorflow-{run_id}-check-report", f"priorflow-{run_id}-check-verdict"} <= keys
    names = {t["name"] for t in task_runs(deployed.api_url, flow_run_id)}
    assert "check-priors" in names and any(n.startswith("gen-6h-") for n in names)

    # the same night again (resumes: nothing to generate), with a bias threshold nobody meets
    failing = [*nightly_run["overrides"], "check.max_bias=1e-9", "check.composition=fail"]
    result, flow_run_id = run_deployment(
        deployed, "prior-generation/nightly", {"overrides": failing, "run_id": run_id}
    )
    run = wait_final(deployed, flow_run_id)
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"] or ""
    assert "prior check failed" in message and "bias" in message, message
    assert result.returncode != 0
    names = {t["name"] for t in task_runs(deployed.api_url, flow_run_id)}
    assert not any(n.startswith("gen-") for n in names)  # resumed: nothing generated again
    first, second = list_checks(run_dir)  # the passing check is kept beside the failing one
    assert latest_check(run_dir) == second
    assert "PASS" in (first / "report.md").read_text().splitlines()[0]
    assert "FAIL" in (second / "report.md").read_text().splitlines()[0]


def test_prior_check_without_run_dir_checks_the_newest_finished_run(
    deployed, on_demand_run, tmp_path
):
    run_dir = Path(on_demand_run["run_dir"])
    assert on_demand_run["result"].returncode == 0
    result, flow_run_id = run_deployment(
        deployed,
        "prior-check/on-demand",
        {"output_dir": str(run_dir.parent), "overrides": LOOSE_CHECK},
    )
    run = wait_final(deployed, flow_run_id)
    output = result.stdout + result.stderr
    assert run["state"]["type"] == "COMPLETED", (run["state"], output[-3000:])
    assert (latest_check(run_dir) / "report.md").is_file()
    assert run["parameters"].get("run_dir") is None

    empty = tmp_path / "no-runs"
    empty.mkdir()
    result, flow_run_id = run_deployment(
        deployed, "prior-check/on-demand", {"output_dir": str(empty)}
    )
    run = wait_final(deployed, flow_run_id)
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"] or ""
    assert f"{empty} holds no finished run" in message, message
    assert "schema" not in message.lower()
