"""The deployments of prefect.yaml, end to end, through Prefect's own CLI.

A real ``prefect server start`` on loopback, ``prefect work-pool create``, ``prefect deploy --all``
from the repository, a process worker, then:

- ``prior-generation/on-demand`` on a tiny config ends Completed and its store exists;
- ``prefect deployment inspect 'prior-generation/nightly'`` shows the cron schedule;
- ``prior-generation/nightly`` (generation + prior check, a ``nightly-YYYYMMDD`` run) completes
  with the check's artifacts; rerun on the same run with impossible thresholds it ends Failed,
  the reasons in its message.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import xarray as xr

from tests.deploy_fixtures import (
    artifacts,
    deployed,
    on_demand_run,
    prefect_server,
    run_deployment,
    task_runs,
    tiny_deploy_config,
    wait_final,
)
from tests.prefect_fixtures import tiny_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["deployed", "on_demand_run", "prefect_server", "tiny_world"]  # fixtures

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


def test_nightly_generation_and_check_then_a_failing_check(deployed, tiny_world, tmp_path):
    config = tiny_deploy_config(tmp_path / "nightly.yaml", tiny_world)
    # the nightly config itself, made tiny through overrides (as a person would from the UI)
    overrides = [
        f"model_path={tiny_world['model']}",
        f"archive={tiny_world['archive']}",
        f"output_dir={tmp_path / 'runs'}",
        'trajectory_sizes="6"',
        'start_dates=["2000-01-03 0h", "2000-01-10 6h"]',
        "blanket_overlap=1",
        "diffusion.num_steps=5",
        "num_samples_per_date=2",
        "hardware.gen.gpus=1",
        *LOOSE_CHECK,
    ]
    assert config.exists()
    night = datetime.now().strftime("%Y%m%d")
    result, flow_run_id = run_deployment(
        deployed, "prior-generation/nightly", {"overrides": overrides}
    )
    run = wait_final(deployed, flow_run_id)
    output = result.stdout + result.stderr
    assert run["state"]["type"] == "COMPLETED", (run["state"], output[-3000:])
    run_dir = tmp_path / "runs" / f"nightly-{night}"
    assert (run_dir / "prior.zarr").is_dir() and (run_dir / "check" / "report.md").is_file()
    keys = {a["key"] for a in artifacts(deployed.api_url, flow_run_id) if a["key"]}
    run_id = f"nightly-{night}"
    assert {f"priorflow-{run_id}-check-report", f"priorflow-{run_id}-check-verdict"} <= keys
    names = {t["name"] for t in task_runs(deployed.api_url, flow_run_id)}
    assert "check-priors" in names and any(n.startswith("gen-6h-") for n in names)

    # the same night again (resumes: nothing to generate), with a bias threshold nobody meets
    failing = [*overrides, "check.max_bias=1e-9"]
    result, flow_run_id = run_deployment(
        deployed, "prior-generation/nightly", {"overrides": failing, "run_id": run_id}
    )
    run = wait_final(deployed, flow_run_id)
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"] or ""
    assert "prior check failed" in message and "bias" in message, message
    assert result.returncode != 0
