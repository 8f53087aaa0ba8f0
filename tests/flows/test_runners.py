"""The Dask task runners built from ``hardware``: options, backends, tasks submitted to them."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import pytest
from prefect import flow, task
from prefect_dask import DaskTaskRunner

from flows.runners import (
    address_task_runner,
    check_workers,
    generation_layout,
    local_cluster,
    local_task_runner,
)
from priorflow.errors import ConfigError
from priorflow.run.local import local_layout
from tests._worker_probe import worker_view
from tests.prefect_fixtures import prefect_api  # noqa: F401  (fixture)


def test_local_runner_options():
    layout = local_layout(1, 0, cpus=2, cores=4, environ={})
    runner = local_task_runner(layout)
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_class is local_cluster
    assert runner.cluster_kwargs == {
        "n_workers": 2,
        "gpus_per_worker": 1,
        "visible_devices": None,
        "torch_threads": 2,
        "dashboard_address": "127.0.0.1:0",
    }
    gpu = local_task_runner(local_layout(2, 4, cores=8, environ={}))
    assert gpu.cluster_kwargs["n_workers"] == 2
    assert gpu.cluster_kwargs["visible_devices"] == ["0,1", "2,3"]


def test_the_generation_layout_reads_hardware_gen(monkeypatch, tmp_path: Path):
    """cpus, ram and max_workers of the config reach the local workers; the tasks bound them."""
    from priorflow.config import Hardware
    from tests._runs import small_run

    monkeypatch.delenv("PRIORFLOW_TORCH_THREADS", raising=False)
    monkeypatch.setattr("priorflow.run.local.machine_cores", lambda: 16)
    monkeypatch.setattr("priorflow.run.local.machine_memory", lambda: 64 * 2**30)
    _, _, plan = small_run(tmp_path)
    hardware = Hardware.model_validate({"gen": {"cpus": 4, "ram": "8GB"}})
    layout = generation_layout(hardware, plan.jobs, n_gpus=0)
    assert (layout.workers, layout.threads, layout.bound) == (4, 4, "cores")
    few = generation_layout(hardware, plan.jobs[:3], n_gpus=0)
    assert (few.workers, few.bound) == (3, "tasks")
    hardware = Hardware.model_validate({"max_workers": 2, "gen": {"cpus": 1, "ram": "8GB"}})
    assert generation_layout(hardware, plan.jobs, n_gpus=0).workers == 2
    hardware = Hardware.model_validate({"gen": {"cpus": 1, "ram": "30GB"}})
    assert generation_layout(hardware, plan.jobs, n_gpus=0).workers == 2  # 64 GiB / 30 GB
    monkeypatch.setenv("PRIORFLOW_TORCH_THREADS", "1")  # the tests' pin wins over cpus
    hardware = Hardware.model_validate({"gen": {"cpus": 4, "ram": "1GB"}})
    pinned = generation_layout(hardware, plan.jobs, n_gpus=0)
    assert (pinned.threads, pinned.workers) == (1, 8)  # 8 tasks


def test_address_runner_and_errors():
    runner = address_task_runner("tcp://127.0.0.1:8786")
    assert runner.address == "tcp://127.0.0.1:8786"
    with pytest.raises(ConfigError, match=r"hardware\.address: required"):
        address_task_runner(None)


@pytest.mark.integration
def test_local_cluster_pins_each_worker_to_its_gpus():
    from distributed import Client

    groups = ["0,1", "2,3"]
    with (
        local_cluster(
            n_workers=2, gpus_per_worker=2, visible_devices=groups, torch_threads=3
        ) as c,
        Client(c) as client,
    ):
        views = client.run(worker_view)
    views = sorted(views.values(), key=lambda v: v["name"])
    assert [v["cuda"] for v in views] == groups
    assert all(v["resources"] == {"GPU": 2} and v["nthreads"] == 1 for v in views)
    assert all(v["threads"] == "3" for v in views)
    assert len({v["pid"] for v in views}) == 2 and os.getpid() not in {v["pid"] for v in views}


@task(task_run_name="probe-{i}")
def _probe(i: int) -> dict:
    return worker_view()


@flow(name="runner-probe")
def _probe_flow(address: str) -> list[dict]:
    """Tasks submitted to a runner chosen at run time (the flow's own is a thread pool)."""
    with address_task_runner(address) as runner:
        with dask.annotate(resources={"GPU": 1}):
            futures = [runner.submit(_probe, parameters={"i": i}) for i in range(3)]
        return [future.result() for future in futures]


@pytest.mark.integration
def test_flow_tasks_run_on_an_existing_scheduler(prefect_api):  # noqa: F811
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, resources={"GPU": 1}, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        worker_pids = set(client.run(os.getpid).values())
        views = _probe_flow(cluster.scheduler_address)
    assert len(views) == 3
    assert {v["pid"] for v in views} <= worker_pids  # ran on the cluster, not in this process


@pytest.mark.integration
def test_workers_without_the_gpu_resource_are_refused():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as plain,
        Client(plain) as client,
        pytest.raises(
            ConfigError,
            match=r"hardware\.address: none of the 1 workers at .*"
            r" --resources GPU=1'",
        ),
    ):
        check_workers(client, 1, plain.scheduler_address)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, resources={"GPU": 2}, dashboard_address=":0"
        ) as gpus,
        Client(gpus) as client,
    ):
        assert check_workers(client, 2) == 1
        with pytest.raises(ConfigError, match="GPU=4"):
            check_workers(client, 4)
    with LocalCluster(n_workers=0, dashboard_address=":0") as empty, Client(empty) as client:
        assert check_workers(client, 1) == 0  # workers may join later


def listening_ports() -> set[tuple[str, int]]:
    """``(address, port)`` of every IPv4 TCP socket this process and its children listen on
    (the cluster's scheduler, dashboard and workers; not other tests' servers beside it)."""
    import psutil

    me = psutil.Process()
    found = set()
    for process in [me, *me.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="tcp4")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                found.add((connection.laddr.ip, connection.laddr.port))
    return found


@pytest.mark.integration
def test_the_local_cluster_listens_on_loopback_only():
    """Scheduler, workers and dashboard: nothing another host can reach."""
    before = listening_ports()
    with local_cluster(n_workers=1) as cluster:
        opened = listening_ports() - before
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
    assert len(opened) >= 3  # the scheduler, its dashboard, the worker (and its nanny)
    assert opened and all(ip == "127.0.0.1" for ip, _ in opened), sorted(opened)


def test_a_local_cluster_without_workers_fails_its_tasks_instead_of_waiting_forever():
    """Every worker dead and none restarted (a machine under pressure): the scheduler fails the
    waiting tasks after a bounded time, so the flow ends and names the missing members."""
    from dask.utils import parse_timedelta

    from flows.runners import NO_WORKERS_TIMEOUT

    with local_cluster(n_workers=1) as cluster:
        assert cluster.scheduler.no_workers_timeout == parse_timedelta(NO_WORKERS_TIMEOUT)
    assert dask.config.get("distributed.scheduler.no-workers-timeout") is None  # only there
