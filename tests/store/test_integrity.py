"""Damage after a run finished is found: ``verify`` names the members, ``export`` refuses,
and a rerun knows exactly which members to generate again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from priorflow.errors import StoreError
from priorflow.store import create_store, write_member
from priorflow.store.export import export_pt
from priorflow.store.integrity import damaged_jobs, verify_run
from tests._runs import damage_members, small_run, tree_hashes

PRIORFLOW = str(Path(sys.executable).parent / "priorflow")


@pytest.fixture
def finished(tmp_path: Path):
    config, _card, plan = small_run(tmp_path)
    create_store(plan.run_dir, plan, config)
    for job in plan.jobs:
        latent = torch.full((job.size, 2, 3, 4), float(job.seed % 97), dtype=torch.float32)
        write_member(plan.run_dir, job, latent + job.member, {"seconds": 1.0})
    return plan


def names_of(plan, group, members):
    size = plan.size(group)
    return sorted(job.name for job in size.jobs if (job.date_index, job.member) in members)


def test_an_intact_run_verifies(finished):
    checked, problems = verify_run(finished.run_dir)
    assert (checked, problems) == (finished.num_jobs, [])
    assert damaged_jobs(finished.run_dir, finished) == []


def test_deleted_zeroed_and_swapped_chunks_are_named(finished):
    hit = damage_members(finished.run_dir, "10h")
    checked, problems = verify_run(finished.run_dir)
    assert checked == finished.num_jobs
    assert sorted(p.name for p in problems) == names_of(finished, "10h", hit)
    assert {p.reason for p in problems} == {"its data does not match its done mark (sha256)"}
    assert sorted(job.name for job in damaged_jobs(finished.run_dir, finished)) == names_of(
        finished, "10h", hit
    )


def test_verify_command_exits_1_naming_the_members(finished):
    ok = subprocess.run(
        [PRIORFLOW, "verify", str(finished.run_dir)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "verified: 8 members" in ok.stdout
    hit = damage_members(finished.run_dir, "12h")
    bad = subprocess.run(
        [PRIORFLOW, "verify", str(finished.run_dir)], capture_output=True, text=True
    )
    assert bad.returncode == 1, bad.stderr
    for name in names_of(finished, "12h", hit):
        assert f"12h {name}: its data does not match" in bad.stdout
    assert "damaged: 4 of 8 members" in bad.stdout


def test_export_refuses_damaged_members(finished, tmp_path):
    damage_members(finished.run_dir, "10h")
    before = tree_hashes(finished.run_dir)
    with pytest.raises(StoreError, match="4 members cannot be trusted") as caught:
        export_pt(finished.run_dir, out=tmp_path / "out", size="10h")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists() and tree_hashes(finished.run_dir) == before
