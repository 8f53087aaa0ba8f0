"""The prior-generation flow with ``hardware.backend: slurm`` on the local SLURM cluster.

``scripts/slurm-local.sh`` (fixture ``slurm_cluster``) runs a real single-node SLURM with two fake
GPUs; the flow's SLURMCluster submits one batch job per Dask worker (``--gres=gpu:1``), against
the session's real Prefect server. Checked:

- every member was generated inside a SLURM job: its done mark and the member table record the
  job id and the GPU id SLURM gave it; the job script artifact carries the ``--gres`` line and
  the Prefect API in its prologue; no job is left in the queue afterwards;
- the store equals a local-backend run of the same config bit for bit (one torch thread);
- ``hardware.aggregate.where: worker``: the aggregation ran in a SLURM job of its own (CPU only,
  the aggregate partition), and on a local worker process for the local run;
- fault: ``scancel`` of a worker job while its generation task runs; the task is rerun on the
  other worker, the flow completes, and every member equals the undisturbed sampler's output.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from flows.generate import generate_priors
from priorflow.models.loading import load_model
from priorflow.store import read_mark, store_path
from tests._runs import direct_trajectory, prepared_run
from tests.prefect_fixtures import read_flow_artifacts, write_run_config
from tests.slurm_local import SLURM_HARDWARE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm_env(slurm_cluster, prefect_api):
    """The local SLURM cluster and the Prefect server; one torch thread in every worker."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIORFLOW_TORCH_THREADS", "1")  # forwarded to the jobs' prologue
        yield slurm_cluster


@pytest.fixture(scope="module")
def runs(slurm_env, tiny_world, tmp_path_factory):
    """The same tiny config run on SLURM and on the local backend, aggregated on workers."""
    root = tmp_path_factory.mktemp("slurm-flow")
    on_worker = {"where": "worker"}
    hardware = SLURM_HARDWARE | {"aggregate": SLURM_HARDWARE["aggregate"] | on_worker}
    slurm = write_run_config(
        root / "slurm.yaml", tiny_world["model"], tiny_world["archive"], hardware=hardware
    )
    local = write_run_config(
        root / "local.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        hardware={"backend": "local", "aggregate": on_worker},
    )
    began = time.monotonic()
    slurm_state = generate_priors(str(slurm), run_id="on-slurm", return_state=True)
    seconds = time.monotonic() - began
    local_state = generate_priors(str(local), run_id="on-local", return_state=True)
    left = slurm_env.wait_empty()
    return {
        "slurm": (slurm, slurm_state),
        "local": (local, local_state),
        "left": left,
        "seconds": seconds,
    }


def test_slurm_run_completes_and_leaves_no_job(runs):
    for name in ("slurm", "local"):
        _, state = runs[name]
        assert state.is_completed(), (name, state.message)
    assert runs["left"] == [], f"jobs still queued after the flow: {runs['left']}"


def test_every_member_ran_in_a_slurm_job_with_its_gpu(runs):
    config, state = runs["slurm"]
    plan = prepared_run(config, run_id="on-slurm").plan
    jobs, gpus = set(), set()
    for job in plan.jobs:
        record = read_mark(plan.run_dir, job)["record"]
        assert record["slurm_job_id"] and record["slurm_job_id"].isdigit(), (job.name, record)
        assert len(record["gpu_ids"]) == 1 and record["gpu_ids"][0] in ("0", "1"), record
        jobs.add(record["slurm_job_id"])
        gpus.add(record["gpu_ids"][0])
    assert 1 <= len(jobs) <= 2  # max_workers: 2 worker jobs for 8 members
    # the worker jobs' own output files, in the run directory
    logs = list((Path(plan.run_dir) / "cluster" / "logs").glob("*.out"))
    assert {p.name.rsplit("-", 1)[-1].removesuffix(".out") for p in logs} >= jobs

    artifacts = {a.key: a for a in read_flow_artifacts(state.state_details.flow_run_id) if a.key}
    for size in plan.sizes:
        rows = artifacts[f"priorflow-on-slurm-{size.group}-members"].data
        rows = rows if isinstance(rows, list) else __import__("json").loads(rows)
        assert {row["slurm_job"] for row in rows} <= jobs and all(row["gpus"] for row in rows)
    script = artifacts["priorflow-on-slurm-job-script"].data
    assert "#SBATCH --gres=gpu:1" in script, script
    assert "#SBATCH -p gpu" in script and "--resources GPU=1" in script
    assert "export PREFECT_API_URL=" in script and "export PRIORFLOW_TORCH_THREADS=1" in script
    # aggregation on a worker: a CPU job of its own in the aggregate partition
    aggregate = artifacts["priorflow-on-slurm-aggregate-job-script"].data
    assert "#SBATCH -p debug" in aggregate and "--gres" not in aggregate, aggregate
    assert "| worker jobs | 2 |" in aggregate  # one per size (6h, 9h)
    assert list((Path(plan.run_dir) / "cluster" / "logs").glob("pf-aggregate-on-slurm-*.out"))


def test_slurm_store_equals_the_local_run_bit_for_bit(runs):
    slurm = prepared_run(runs["slurm"][0], run_id="on-slurm").plan
    local = prepared_run(runs["local"][0], run_id="on-local").plan
    for size in slurm.sizes:
        a = xr.open_zarr(store_path(slurm.run_dir), group=size.group)
        b = xr.open_zarr(store_path(local.run_dir), group=size.group)
        assert a.latent.shape == b.latent.shape
        assert np.array_equal(a.latent.values, b.latent.values), size.group
        assert np.array_equal(a.timestamps.values, b.timestamps.values)
    for job in slurm.jobs:
        assert read_mark(slurm.run_dir, job)["sha256"] == read_mark(local.run_dir, job)["sha256"]


def _running_generation_tasks(flow_run_name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name])),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )


def _worker_jobs(cluster, name: str) -> list[tuple[str, str]]:
    """``(job id, state)`` of this run's worker jobs in the queue."""
    out = cluster.run("squeue", "-h", "-n", name, "-o", "%i %T").stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def test_scancel_of_a_worker_mid_task_still_completes_every_member(
    slurm_env, tiny_world, tmp_path
):
    """Two slow members on two worker jobs; one job is cancelled while its task runs."""
    steps = 6000  # about 4 s of sampling per member here: time to hit a running task
    config = write_run_config(
        tmp_path / "fault.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        trajectory_sizes="9",
        start_dates=["2000-01-03 0h"],
        num_samples_per_date=2,
        diffusion={"num_steps": steps, "sampler": {"type": "lms"}},
        hardware=SLURM_HARDWARE,
    )
    name = f"fault-{tmp_path.name}"
    states: dict = {}
    flow = generate_priors.with_options(flow_run_name=name)
    thread = threading.Thread(
        target=lambda: states.update(state=flow(str(config), run_id="fault", return_state=True)),
        daemon=True,
    )
    thread.start()
    job_name = "pf-gen-fault"
    deadline = time.monotonic() + 120
    killed = None
    while time.monotonic() < deadline and thread.is_alive():
        jobs = [job for job, state in _worker_jobs(slurm_env, job_name) if state == "RUNNING"]
        if len(jobs) == 2 and len(_running_generation_tasks(name)) == 2:
            killed = sorted(jobs)[0]
            slurm_env.run("scancel", killed)
            break
        time.sleep(0.2)
    assert killed is not None, "never saw both members running on two SLURM workers"
    thread.join(timeout=240)
    assert not thread.is_alive(), "the flow did not finish after the scancel"
    state = states["state"]
    assert state.is_completed(), state.message

    plan = prepared_run(config, run_id="fault").plan
    model = load_model(plan.spec.model_path)
    torch.set_num_threads(1)
    ds = xr.open_zarr(store_path(plan.run_dir), group="9h")
    ran_on = set()
    for job in plan.jobs:
        record = read_mark(plan.run_dir, job)["record"]
        ran_on.add(record["slurm_job_id"])
        undisturbed = direct_trajectory(model, job)
        stored = ds.latent.isel(start_date=job.date_index, member=job.member).values
        assert np.array_equal(stored, undisturbed.latent.numpy()), job.name
    # the cancelled job finished nothing: its member was rerun on the surviving worker
    assert killed not in ran_on and len(ran_on) == 1, (killed, ran_on)
    assert slurm_env.wait_empty() == []
