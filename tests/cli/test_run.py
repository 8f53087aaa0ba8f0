"""``priorflow run``: errors before anything starts, the missing synthetic archive, a real run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cli import main
from priorflow.data.synthetic_archive import DEFAULT_ARCHIVE_RANGE, synthetic_archive_spec
from priorflow.evaluation.check_folders import latest_check
from priorflow.models.card import read_card
from tests.prefect_fixtures import (
    copy_model_with_target,
    prefect_api,  # noqa: F401  (fixture)
    tiny_world,  # noqa: F401  (fixture)
    write_run_config,
)

PRIORFLOW = Path(sys.executable).with_name("priorflow")


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory with no Prefect API configured."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return work


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["run", *args])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def with_card_metadata(model: Path, out: Path, **metadata) -> Path:
    copy_model_with_target(model, out, "priorflow.models.exact:exact_backbone")
    card = yaml.safe_load((out / "card.yaml").read_text())
    card["metadata"].update(metadata)
    (out / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return out


@pytest.mark.parametrize(
    ("changes", "overrides", "message"),
    [
        ({"samples": 2}, [], r"samples: unknown key"),
        ({}, ["diffusion.num_steps=0"], r"diffusion\.num_steps: 0"),
        ({}, ["diffusion.sampler.type=euler"], r"diffusion\.sampler\.type: 'euler'"),
        ({"blanket_overlap": 4}, [], r"blanket_overlap: 4"),
        ({"model_path": "/nonexistent/model"}, [], r"model_path: '/nonexistent/model' does not"),
        ({"start_dates": ["2003-01-01 0h"]}, [], r"start_dates.*2003-01-01"),
        ({"model_target": "last"}, ["model_target=worst"], r"model_target: 'worst'"),
        ({}, ["hardware.backend=slurm", "hardware.max_workers=0"], r"hardware\.max_workers: 0"),
        ({}, ["hardware.backend=address"], r"hardware\.address: missing"),
    ],
)
def test_a_bad_config_exits_2_with_one_line_and_writes_nothing(
    tiny_world,  # noqa: F811
    workdir,
    tmp_path,
    capsys,
    changes,
    overrides,
    message,
):
    config = write_run_config(
        tmp_path / "cfg" / "run.yaml", tiny_world["model"], tiny_world["archive"], **changes
    )
    before = files_under(tmp_path)
    args = [str(config), "--run-id", "bad"]
    for item in overrides:
        args += ["--set", item]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in out + err
    assert files_under(tmp_path) == before  # no run directory, no .prefect, no server
    assert "PREFECT_API_URL" not in os.environ


def test_a_missing_archive_is_an_error_without_build(tiny_world, workdir, tmp_path, capsys):  # noqa: F811
    missing = tmp_path / "nowhere.zarr"
    config = write_run_config(tmp_path / "cfg" / "run.yaml", tiny_world["model"], missing)
    code, _, err = run_cli([str(config), "--no-build-archive"], capsys)
    assert code == 2 and err.startswith("error: ") and "nowhere.zarr" in err
    assert not missing.exists() and not (workdir / ".prefect").exists()


def test_a_missing_archive_of_an_unknown_world_is_not_built(tiny_world, workdir, tmp_path, capsys):  # noqa: F811
    model = copy_model_with_target(
        tiny_world["model"], tmp_path / "model", "priorflow.models.exact:exact_backbone"
    )
    card = yaml.safe_load((model / "card.yaml").read_text())
    card["metadata"] = {"kind": "trained elsewhere"}
    (model / "card.yaml").write_text(yaml.safe_dump(card))
    missing = tmp_path / "nowhere.zarr"
    config = write_run_config(tmp_path / "cfg" / "run.yaml", model, missing)
    code, _, err = run_cli([str(config)], capsys)
    assert code == 2 and "nowhere.zarr" in err and not missing.exists()


def test_resuming_with_other_settings_exits_2_before_anything_starts(
    tiny_world,  # noqa: F811
    workdir,
    tmp_path,
    capsys,
):
    from priorflow.store import create_store, run_provenance
    from tests._runs import prepared_run

    config = write_run_config(
        tmp_path / "cfg" / "run.yaml", tiny_world["model"], tiny_world["archive"]
    )
    prepared = prepared_run(config, run_id="resumed")
    create_store(prepared.run_dir, prepared.plan, prepared.config, run_provenance())
    before = {p: p.read_bytes() for p in prepared.run_dir.rglob("*") if p.is_file()}
    code, _, err = run_cli([str(config), "--run-id", "resumed", "--set", "seed=8"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was made with seed = 7, this config gives 8" in err
    assert {p: p.read_bytes() for p in prepared.run_dir.rglob("*") if p.is_file()} == before
    assert not (workdir / ".prefect").exists()


def test_a_directory_made_by_someone_else_is_refused_before_anything_starts(
    tiny_world,  # noqa: F811
    workdir,
    tmp_path,
    capsys,
):
    config = write_run_config(
        tmp_path / "cfg" / "run.yaml", tiny_world["model"], tiny_world["archive"]
    )
    theirs = tmp_path / "cfg" / "runs" / "taken"
    (theirs / "marks").mkdir(parents=True)
    (theirs / "marks" / "keep.txt").write_text("mine")
    (theirs / "config.yaml").write_text("mine: true\n")
    code, _, err = run_cli([str(config), "--run-id", "taken"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was not made by priorflow" in err
    assert (theirs / "marks" / "keep.txt").read_text() == "mine"
    assert (theirs / "config.yaml").read_text() == "mine: true\n"
    assert not (workdir / ".prefect").exists()


@pytest.mark.parametrize(
    ("archive_range", "message"),
    [
        (
            ["2000-01-01T00", "2300-01-01T00"],
            "end: 2300-01-01 00h lies outside the years 1678-2261",
        ),
        (["1700-01-01T00", "2200-12-31T23"], "more than the 2.0 GiB allowed"),
        (["2000-02-01T00", "2000-01-01T00"], "is before start"),
    ],
)
def test_a_card_cannot_make_the_tool_write_a_huge_or_empty_archive(
    tiny_world,  # noqa: F811
    workdir,
    tmp_path,
    capsys,
    archive_range,
    message,
):
    """Attack: a card's ``archive_range`` decided how much the automatic build wrote (1.3 GB in
    40 s, or an empty archive that broke every later run). It is bounded now, before writing."""
    model = with_card_metadata(
        tiny_world["model"], tmp_path / "model", archive_range=archive_range
    )
    card = yaml.safe_load((model / "card.yaml").read_text())
    card["metadata"]["world"]["kwargs"]["shape"] = [64, 64, 64]  # big states: a big archive
    card["state_shape"] = [64, 64, 64]
    (model / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    import torch

    from priorflow.models.exact import exact_backbone

    state = exact_backbone(
        (64, 64, 64), **{k: v for k, v in card["backbone"]["kwargs"].items() if k != "shape"}
    ).state_dict()
    for name in ("model_best.pt", "model_last.pt"):
        torch.save(state, model / name)
    archive = tmp_path / "data" / "archive.zarr"
    config = write_run_config(tmp_path / "cfg" / "run.yaml", model, archive)
    code, _, err = run_cli([str(config)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not archive.exists() and not (tmp_path / "data").exists()  # nothing written


def test_an_archive_is_built_only_where_the_config_says(tiny_world, workdir, tmp_path, capsys):  # noqa: F811
    """A card's ``archive`` may name where its archive lives, not where the tool writes."""
    model = with_card_metadata(tiny_world["model"], tmp_path / "model")
    card = yaml.safe_load((model / "card.yaml").read_text())
    card["archive"] = "../elsewhere/archive.zarr"
    (model / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    config = write_run_config(tmp_path / "cfg" / "run.yaml", model, None)
    code, _, err = run_cli([str(config)], capsys)
    assert code == 2 and "archive.zarr does not exist" in err
    assert not (tmp_path / "elsewhere").exists()


def test_synthetic_archive_spec_from_the_card(tiny_world, tmp_path):  # noqa: F811
    exact = synthetic_archive_spec(read_card(tiny_world["model"]).metadata)
    assert exact["world"]["shape"] == [2, 4, 8]
    assert (exact["start"], exact["end"]) == DEFAULT_ARCHIVE_RANGE
    assert (exact["seed"], exact["dt_hours"]) == (0, 1)
    trained = with_card_metadata(
        tiny_world["model"],
        tmp_path / "trained",
        archive_world=read_card(tiny_world["model"]).metadata["world"],
        archive_range=["2000-01-01T00", "2000-01-05T23"],
        archive_seed=3,
    )
    spec = synthetic_archive_spec(read_card(trained).metadata)
    assert (spec["start"], spec["end"], spec["seed"]) == ("2000-01-01T00", "2000-01-05T23", 3)


@pytest.mark.integration
def test_run_builds_the_archive_runs_the_flow_and_prints_where(prefect_api, tiny_world, tmp_path):  # noqa: F811
    model = with_card_metadata(
        tiny_world["model"], tmp_path / "model", archive_range=["2000-01-01T00", "2000-01-15T23"]
    )
    archive = tmp_path / "data" / "archive.zarr"
    config = write_run_config(
        tmp_path / "cfg" / "run.yaml",
        model,
        archive,
        trajectory_sizes="6",
        start_dates=["2000-01-03 0h"],
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PRIORFLOW_TORCH_THREADS": "1"}
    done = subprocess.run(
        [str(PRIORFLOW), "run", str(config), "--run-id", "cli-test"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert archive.is_dir()  # built from the card's world
    store = (tmp_path / "cfg" / "runs" / "cli-test" / "prior.zarr").resolve()
    assert f"store     {store}" in done.stdout
    match = re.search(r"flow run  (\S+)/runs/flow-run/([0-9a-f-]{36})", done.stdout)
    assert match and match[1] == prefect_api.removesuffix("/api")
    assert not (tmp_path / ".prefect").exists()  # used the configured server

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(match[2])
    assert flow_run.state.is_completed()
    # the flow got the config the command loaded (read once), the run's settings in the UI
    assert flow_run.parameters["config"]["run_id"] == "cli-test"
    assert flow_run.parameters["config_path"] is None

    # --check on the same run: resumed (nothing to generate), then the prior check fails
    thresholds = ["--set", "check.max_lag=3", "--set", "check.max_bias=1e-9"]
    checked = subprocess.run(
        [str(PRIORFLOW), "run", str(config), "--run-id", "cli-test", "--check", *thresholds],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "(resumed)" in checked.stdout
    assert "prior check failed" in checked.stderr and "bias" in checked.stderr, checked.stderr
    assert (latest_check(store.parent) / "report.md").is_file()

    failing = copy_model_with_target(
        tiny_world["model"],
        tmp_path / "failing",
        "tests.prefect_fixtures:FailingBackbone",
        fail_day=3,
    )
    config = write_run_config(
        tmp_path / "cfg2" / "run.yaml",
        failing,
        tiny_world["archive"],
        trajectory_sizes="6",
        start_dates=["2000-01-03 0h"],
        num_samples_per_date=1,
    )
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # tests.prefect_fixtures
    failed = subprocess.run(
        [str(PRIORFLOW), "run", str(config), "--run-id", "cli-fail"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error: the run did not complete" in failed.stderr
    assert "gen-6h-2000-01-03T00-m0" in failed.stderr


def _start_run(config: Path, cwd: Path, run_id: str) -> tuple[subprocess.Popen, str]:
    """``priorflow run`` in the background with its own local server; returns the process and
    the API URL it prints, once the flow run has begun (its record is in the run directory)."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env |= {"PRIORFLOW_PREFECT_HOME": str(cwd / ".prefect"), "PRIORFLOW_TORCH_THREADS": "1"}
    process = subprocess.Popen(
        [str(PRIORFLOW), "run", str(config), "--run-id", run_id],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api = None
    for line in process.stdout:
        found = re.search(r"^prefect   (http://127\.0\.0\.1:\d+)", line)
        if found:
            api = found[1] + "/api"
            break
    assert api is not None, "no server line"
    record = config.parent / "runs" / run_id / ".flow-run.json"
    deadline = time.monotonic() + 120
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert record.exists()
    return process, api


def _answers(api: str) -> bool:
    from flows.server import api_healthy

    return api_healthy(api, timeout=1.0)


@pytest.mark.integration
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_leaves_no_server_and_the_next_run_marks_it_crashed(
    tiny_world,  # noqa: F811
    tmp_path,
    how,
):
    """Attack: SIGKILL or SIGTERM of ``priorflow run``. Before, its server ran on forever (parent
    1), later runs started new ones, and the flow run stayed RUNNING. Now the server dies with
    the command, and the next run of the run_id marks the dead flow run Crashed and resumes."""
    config = write_run_config(
        tmp_path / "cfg" / "run.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        diffusion={"num_steps": 400, "sampler": {"type": "lms"}},
    )
    process, api = _start_run(config, tmp_path, "killed")
    record = tmp_path / "cfg" / "runs" / "killed" / ".flow-run.json"
    dead = json.loads(record.read_text())
    process.send_signal(how)
    process.wait(timeout=120)
    deadline = time.monotonic() + 30
    while _answers(api) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _answers(api), "the server outlived priorflow run"
    # SIGTERM: the process reported its end itself; SIGKILL: the record is left for the next run
    assert record.exists() == (how == signal.SIGKILL)

    again = subprocess.run(
        [
            str(PRIORFLOW),
            "run",
            str(config),
            "--run-id",
            "killed",
            "--keep-server",
            "--set",
            "diffusion.num_steps=400",
        ],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
            "PRIORFLOW_PREFECT_HOME": str(tmp_path / ".prefect"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    kept = json.loads((tmp_path / ".prefect" / "server.json").read_text())
    try:
        assert again.returncode == 0, again.stdout + again.stderr
        from prefect.client.orchestration import get_client

        from flows.server import use_api_url

        with use_api_url(kept["api_url"]), get_client(sync_client=True) as client:
            old = client.read_flow_run(dead["flow_run_id"])
        assert old.state.is_crashed(), old.state
        assert not record.exists()  # a run that ends leaves no record
    finally:
        from flows.server import stop_server

        stop_server(kept["pid"])


def _server_pid(api: str) -> int:
    """The process of the ``prefect server start`` listening where ``api`` says."""
    port = api.rsplit(":", 1)[1].split("/")[0]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server" in command and b"start" in command and port.encode() in command:
            return int(proc.name)
    raise AssertionError(f"no server process for {api}")


@pytest.mark.integration
def test_a_server_that_dies_mid_run_is_one_line_and_the_run_resumes(tiny_world, tmp_path):  # noqa: F811
    """Attack: the Prefect server dies while members run. Before, every member failed at once
    and the command ended 254 s later with a 170-line httpx traceback. Now it says so in one
    line within seconds, exits 1, and the same run_id resumes."""
    config = write_run_config(
        tmp_path / "cfg" / "run.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        diffusion={"num_steps": 400, "sampler": {"type": "lms"}},
    )
    process, api = _start_run(config, tmp_path, "orphaned")
    os.kill(_server_pid(api), signal.SIGKILL)
    output = process.communicate(timeout=60)[0]  # the watch ends it in about 6 s
    assert process.returncode == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the Prefect server at {api} stopped answering during the run; start it again"
        " and run with --run-id orphaned to resume (done members are kept)"
    ], output
    assert "Traceback" not in output
    again = subprocess.run(
        [str(PRIORFLOW), "run", str(config), "--run-id", "orphaned"],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
            "PRIORFLOW_PREFECT_HOME": str(tmp_path / ".prefect"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(resumed)" in again.stdout
