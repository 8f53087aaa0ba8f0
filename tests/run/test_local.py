"""How the jobs share workers: the local worker layout and each job's Dask resources."""

from __future__ import annotations

import pytest

from priorflow.errors import ConfigError
from priorflow.run.local import job_resources, local_worker_layout


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
