"""Prefect blocks: registered with ``prefect block register -m blocks``, saved on the real test
server, loaded back by name, and named by a run config instead of paths and settings.

A run whose config says ``blocks: {model: ..., archive: ..., cluster: ...}`` must equal the same
run written with plain paths and hardware settings (same resolved config, same samples bit for
bit). ``priorflow plan`` resolves blocks when a Prefect API answers and says so in one line when
none does.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import yaml

from blocks import ClusterProfile, LatentArchive, PriorModel
from flows.generate import generate_priors
from flows.run_config import load_block, resolve_block
from priorflow.errors import ConfigError
from priorflow.store import store_path
from tests._runs import prepared_run
from tests.prefect_fixtures import write_run_config

pytestmark = pytest.mark.integration

PROFILE = {
    "scheduler": "local",
    "cpus": 1,
    "ram": "2GB",
    "time": "0:10:00",
    "gpus": 1,
    "aggregate_ram": "1GB",
    "aggregate_time": "0:05:00",
}
PLAIN_HARDWARE = {
    "backend": "local",
    "gen": {"cpus": 1, "ram": "2GB", "time": "0:10:00", "gpus": 1},
    "aggregate": {"ram": "1GB", "time": "0:05:00"},
}


@pytest.fixture(scope="module")
def saved(prefect_api, tiny_world):
    """The three block types registered through the CLI and one block of each saved."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    register = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert register.returncode == 0, register.stdout + register.stderr
    assert "Successfully registered 3 blocks" in register.stdout, register.stdout
    PriorModel(model_path=str(tiny_world["model"]), model_target="best").save(
        "tiny", overwrite=True
    )
    LatentArchive(path=str(tiny_world["archive"])).save("tiny-january", overwrite=True)
    ClusterProfile(**PROFILE).save("laptop", overwrite=True)
    listed = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "type", "ls"],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {"types": listed.stdout, "env": env}


def test_block_types_are_registered_for_the_ui(saved):
    for slug in ("prior-model", "latent-archive", "cluster-profile"):
        assert slug in saved["types"], saved["types"]


def test_blocks_load_back_by_name(saved, tiny_world):
    model = PriorModel.load("tiny")
    assert (model.model_path, model.model_target) == (str(tiny_world["model"]), "best")
    assert LatentArchive.load("tiny-january").path == str(tiny_world["archive"])
    profile = load_block("cluster", "cluster-profile/laptop")
    assert isinstance(profile, ClusterProfile) and profile.cpus == 1
    assert resolve_block("model", "prior-model/tiny") == {
        "model_path": str(tiny_world["model"]),
        "model_target": "best",
    }
    assert resolve_block("cluster", "laptop") == {"hardware": PLAIN_HARDWARE}


def test_a_prior_model_saved_with_the_old_field_name_target_still_loads(saved, tiny_world):
    """A block document saved before ``target`` became ``model_target`` (its data as stored)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentCreate

    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("prior-model")
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        old = {"model_path": str(tiny_world["model"]), "target": "last"}
        client.create_block_document(
            BlockDocumentCreate(
                name="old-tiny", data=old, block_schema_id=schema.id, block_type_id=block_type.id
            )
        )
    assert resolve_block("model", "old-tiny") == {
        "model_path": str(tiny_world["model"]),
        "model_target": "last",
    }


def test_unknown_or_mistyped_block_names_are_one_line_errors(saved):
    with pytest.raises(ConfigError, match=r"^blocks\.model: no prior-model block named 'nope'"):
        resolve_block("model", "nope")
    with pytest.raises(
        ConfigError, match=r"^blocks\.archive: 'prior-model/tiny' is a prior-model"
    ):
        resolve_block("archive", "prior-model/tiny")


def test_a_run_naming_blocks_equals_the_plain_run(saved, tiny_world, tmp_path):
    plain = write_run_config(
        tmp_path / "plain.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        trajectory_sizes="6",
        hardware=PLAIN_HARDWARE,
    )
    named = tmp_path / "named.yaml"
    data = yaml.safe_load(plain.read_text())
    for key in ("model_path", "archive", "hardware"):
        data.pop(key)
    data["blocks"] = {"model": "tiny", "archive": "tiny-january", "cluster": "laptop"}
    named.write_text(yaml.safe_dump(data))

    a = prepared_run(plain, run_id="same").config.resolved()
    b = prepared_run(named, run_id="same").config.resolved()
    assert a == b  # the names are resolved to exactly the plain values

    plain_state = generate_priors(str(plain), run_id="plain-run", return_state=True)
    named_state = generate_priors(str(named), run_id="named-run", return_state=True)
    assert plain_state.is_completed() and named_state.is_completed(), named_state.message
    x = xr.open_zarr(store_path(tmp_path / "runs" / "plain-run"), group="6h")
    y = xr.open_zarr(store_path(tmp_path / "runs" / "named-run"), group="6h")
    assert np.array_equal(x.latent.values, y.latent.values)
    for key in ("model_path", "checkpoint_sha256", "card", "diffusion", "seed"):
        assert key in x.attrs or any(k.startswith(f"{key}.") for k in x.attrs), key
        keys = [k for k in x.attrs if k == key or k.startswith(f"{key}.")]
        assert [x.attrs[k] for k in keys] == [y.attrs.get(k) for k in keys], key


def test_config_values_win_over_the_cluster_profile(saved, tiny_world, tmp_path):
    config = write_run_config(tmp_path / "c.yaml", tiny_world["model"], tiny_world["archive"])
    data = yaml.safe_load(config.read_text())
    data["hardware"] = {"gen": {"cpus": 3}}
    data["blocks"] = {"cluster": "laptop"}
    config.write_text(yaml.safe_dump(data))
    hardware = prepared_run(config).config.hardware
    assert hardware.gen.cpus == 3 and hardware.gen.ram == "2GB"  # own key, then the profile's
    assert hardware.aggregate.time == "0:05:00"


def test_priorflow_plan_resolves_blocks_or_says_why_not(saved, tiny_world, tmp_path):
    config = write_run_config(tmp_path / "p.yaml", None, None)
    data = yaml.safe_load(config.read_text())
    data.pop("model_path")
    data["blocks"] = {"model": "tiny", "archive": "tiny-january"}
    config.write_text(yaml.safe_dump(data))
    command = [sys.executable, "-m", "cli", "plan", str(config)]
    ok = subprocess.run(command, env=saved["env"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert str(tiny_world["model"]) in ok.stdout and "(dates checked)" in ok.stdout

    offline = {k: v for k, v in saved["env"].items() if not k.startswith("PREFECT_")}
    offline |= {"PREFECT_HOME": str(tmp_path / "home"), "PRIORFLOW_PREFECT_HOME": str(tmp_path)}
    no = subprocess.run(command, env=offline, capture_output=True, text=True, timeout=120)
    assert no.returncode == 2
    lines = no.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: blocks.model: 'tiny' is a Prefect"), (
        no.stderr
    )
