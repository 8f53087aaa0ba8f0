"""How the jobs share workers: the local worker layout and each job's Dask resources."""

from __future__ import annotations

import pytest

from priorflow.errors import ConfigError
from priorflow.run.local import job_resources, local_layout, local_worker_layout


@pytest.mark.parametrize(
    ("gpus_per_job", "n_gpus", "layout"),
    [
        (1, 0, (1, 1, None)),  # CPU-only: one worker, one slot
        (0, 0, (1, 1, None)),
        (4, 0, (1, 1, None)),
        (1, 1, (1, 1, ["0"])),
        (1, 4, (4, 1, ["0", "1", "2", "3"])),
        (2, 4, (2, 2, ["0,1", "2,3"])),
        (3, 4, (1, 3, ["0,1,2"])),
        (0, 2, (2, 1, ["0", "1"])),
    ],
)
def test_local_worker_layout(gpus_per_job, n_gpus, layout):
    assert local_worker_layout(gpus_per_job, n_gpus) == layout


def test_a_job_larger_than_the_machine_is_a_config_error():
    with pytest.raises(ConfigError, match=r"hardware\.gen\.gpus: a job needs 3 GPUs .* has 2"):
        local_worker_layout(3, 2)


def test_job_resources():
    assert job_resources(0, "local", n_gpus=0) == {"GPU": 1}  # the CPU slot
    assert job_resources(2, "local", n_gpus=0) == {"GPU": 1}
    assert job_resources(2, "local", n_gpus=4) == {"GPU": 2}
    assert job_resources(0, "address", n_gpus=0) == {"GPU": 1}
    assert job_resources(3, "address", n_gpus=0) == {"GPU": 3}
    assert job_resources(3, "slurm", n_gpus=0) == {"GPU": 3}


GiB = 2**30


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # CPU-only: workers = cores // threads, threads = cpus (at most the cores)
        (dict(cpus=1, cores=16), (16, 1, "cores")),
        (dict(cpus=4, cores=16), (4, 4, "cores")),
        (dict(cpus=3, cores=16), (5, 3, "cores")),
        (dict(cpus=32, cores=16), (1, 16, "cores")),
        (dict(cpus=1, cores=16, tasks=6), (6, 1, "tasks")),
        (dict(cpus=1, cores=16, max_workers=3), (3, 1, "max_workers")),
        (dict(cpus=1, cores=16, ram=8 * GiB, memory=20 * GiB), (2, 1, "ram")),
        (dict(cpus=1, cores=16, ram=64 * GiB, memory=20 * GiB), (1, 1, "ram")),
        (dict(cpus=1, cores=1), (1, 1, "cores")),
    ],
)
def test_local_layout_on_a_cpu_machine(args, expected):
    layout = local_layout(1, 0, environ={}, **{"memory": None, **args})
    assert (layout.workers, layout.threads, layout.bound) == expected
    assert layout.workers * layout.threads <= max(args["cores"], layout.threads)
    assert layout.slots == 1 and layout.visible_devices is None
    assert layout.threads_from == "hardware.gen.cpus"


def test_local_layout_with_gpus_shares_the_cores_between_the_workers():
    layout = local_layout(1, 4, cpus=8, cores=16, memory=None, environ={})
    assert (layout.workers, layout.threads, layout.visible_devices) == (4, 4, ["0", "1", "2", "3"])
    two = local_layout(2, 4, cpus=2, cores=16, memory=None, environ={})
    assert (two.workers, two.threads, two.slots, two.visible_devices) == (2, 2, 2, ["0,1", "2,3"])
    one_task = local_layout(1, 4, cpus=8, cores=16, tasks=1, memory=None, environ={})
    assert (one_task.workers, one_task.threads, one_task.visible_devices) == (1, 8, ["0"])


def test_an_explicit_torch_threads_wins_over_cpus():
    environ = {"PRIORFLOW_TORCH_THREADS": "1"}
    layout = local_layout(1, 0, cpus=4, cores=16, memory=None, environ=environ)
    assert (layout.workers, layout.threads) == (16, 1)
    assert layout.threads_from == "PRIORFLOW_TORCH_THREADS"
    gpu = local_layout(1, 2, cpus=8, cores=16, memory=None, environ=environ)
    assert (gpu.workers, gpu.threads) == (2, 1)
    with pytest.raises(ConfigError, match="PRIORFLOW_TORCH_THREADS"):
        local_layout(1, 0, cores=4, environ={"PRIORFLOW_TORCH_THREADS": "zero"})


def test_the_layout_says_what_it_is():
    layout = local_layout(1, 0, cpus=2, cores=8, tasks=2, memory=16 * GiB, environ={})
    assert layout.describe() == (
        "2 workers x 2 torch threads (hardware.gen.cpus; this machine: 8 cores, 16.0 GiB;"
        " workers bound by tasks)"
    )
