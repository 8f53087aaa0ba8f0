"""Export to the original layout: trajectories.pt (dates, members, T0, *S), timestamps.pt (..., 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cli import main
from priorflow.core.dates import timestamps as state_timestamps
from priorflow.errors import ConfigError
from priorflow.store import StoreError, create_store, write_member
from priorflow.store.export import export_pt
from tests._runs import small_run


def latent_of(job) -> np.ndarray:
    return np.random.default_rng(job.seed).standard_normal((job.size, 2, 3, 4)).astype(np.float32)


@pytest.fixture
def finished(tmp_path: Path):
    config, _card, plan = small_run(tmp_path)
    create_store(plan.run_dir, plan, config)
    for job in plan.jobs:
        write_member(plan.run_dir, job, latent_of(job), {"seconds": 1.0})
    return plan


def test_export_every_size(finished):
    plan = finished
    written = export_pt(plan.run_dir)
    out = plan.run_dir / "export"
    assert written == [
        out / "10h" / "trajectories.pt",
        out / "10h" / "timestamps.pt",
        out / "12h" / "trajectories.pt",
        out / "12h" / "timestamps.pt",
    ]
    for size in plan.sizes:
        trajectories = torch.load(out / size.group / "trajectories.pt", weights_only=True)
        stamps = torch.load(out / size.group / "timestamps.pt", weights_only=True)
        T0 = size.trajectory_size
        assert trajectories.shape == (2, 2, T0, 2, 3, 4) and trajectories.dtype == torch.float32
        assert stamps.shape == (2, 2, T0, 4) and stamps.dtype == torch.long
        for job in size.jobs:
            d, m = job.date_index, job.member
            assert torch.equal(trajectories[d, m], torch.from_numpy(latent_of(job)))
            assert torch.equal(stamps[d, m], state_timestamps(job.start, T0, 1))


def test_export_one_size_to_a_folder(finished, tmp_path: Path):
    written = export_pt(finished.run_dir, out=tmp_path / "x", size="12")
    assert written == [
        tmp_path / "x" / "12h" / "trajectories.pt",
        tmp_path / "x" / "12h" / "timestamps.pt",
    ]
    with pytest.raises(ConfigError, match="size: '48h' is not in this run"):
        export_pt(finished.run_dir, size="48h")


def test_export_refuses_an_unfinished_run(tmp_path: Path):
    config, _card, plan = small_run(tmp_path)
    create_store(plan.run_dir, plan, config)
    job = plan.jobs[0]
    write_member(plan.run_dir, job, latent_of(job), {})
    with pytest.raises(StoreError, match="10h: 3 members are not done"):
        export_pt(plan.run_dir)
    assert not (plan.run_dir / "export").exists()
    with pytest.raises(StoreError, match="has no prior.zarr"):
        export_pt(tmp_path / "nowhere")


def test_cli_export(finished, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as done:
        main(
            [
                "export",
                str(finished.run_dir),
                "--format",
                "pt",
                "--size",
                "10h",
                "--out",
                str(tmp_path / "e"),
            ]
        )
    assert done.value.code == 0
    assert (tmp_path / "e" / "10h" / "trajectories.pt").exists()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["export", str(finished.run_dir), "--format", "npz"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: --format: 'npz' is not an export format — choose pt, netcdf\n"
