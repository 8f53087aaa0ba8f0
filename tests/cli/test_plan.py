"""``priorflow plan`` as a user runs it: a subprocess on the example config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._runs import CONFIGS, ORIGINAL_EXAMPLE, make_card, write_config, write_model_dir
from tests.prefect_fixtures import tiny_world, write_run_config  # noqa: F401  (fixture)

PRIORFLOW = str(Path(sys.executable).parent / "priorflow")


def plan(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PRIORFLOW, "plan", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"), make_card(archive=None))


def test_plan_of_the_example(model: Path, tmp_path: Path):
    before = sorted(tmp_path.rglob("*"))
    result = plan(
        str(CONFIGS / "example.yaml"),
        "--set",
        f"model_path={model}",
        "--set",
        f"output_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    row = next(line for line in out.splitlines() if line.strip().startswith("72h"))
    assert row.split() == ["72h", "72", "72", "17", "4", "4", "1"]  # T0, T_pad, N, S, jobs, gpus
    assert "4 generation + 1 aggregation" in out
    assert "backend slurm" in out
    assert "cpus 8, ram 64GB, time 6:00:00 = 6 h, partition gpu, gpus 1" in out
    assert "lms (grid=uniform, order=3), 64 steps, float16, overlap O=4" in out
    assert "dates      2: 2000-04-03T00, 2000-04-20T12" in out
    assert "store      not created" in out
    assert sorted(tmp_path.rglob("*")) == before  # wrote nothing


def test_plan_takes_the_run_id_as_run_does(model: Path, tmp_path: Path):
    """``--run-id 2024`` is a name (text), in plan as in run: both load the config one way."""
    result = plan(
        str(CONFIGS / "example.yaml"),
        "--set",
        f"model_path={model}",
        "--set",
        f"output_dir={tmp_path / 'runs'}",
        "--run-id",
        "2024",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"run        2024  ->  {tmp_path / 'runs' / '2024'}" in result.stdout


def test_plan_with_sizes_and_auto_gpus(model: Path, tmp_path: Path):
    result = plan(
        str(CONFIGS / "example.yaml"),
        "--set", f"model_path={model}",
        "--set", "trajectory_sizes=24-26",
        "--set", "hardware.gen.gpus=auto",
        "--set", "hardware.gen.blankets_per_gpu=4",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [
        line.split()
        for line in result.stdout.splitlines()
        if line.strip()[:3] in ("24h", "25h", "26h")
    ]
    assert rows == [
        ["24h", "24", "24", "5", "4", "4", "2"],
        ["25h", "25", "28", "6", "4", "4", "2"],
        ["26h", "26", "28", "6", "4", "4", "2"],
    ]


def test_plan_notes_an_archive_not_built_yet(model: Path, tmp_path: Path):
    result = plan(
        str(CONFIGS / "demo.yaml"),
        "--set",
        f"model_path={model}",
        "--set",
        "archive=none.zarr",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"archive    {tmp_path / 'none.zarr'} (not built yet; dates not checked)" in result.stdout
    )
    assert "backend local" in result.stdout


ERRORS = [
    # (config text or None for the example, extra args, the error line's start)
    (ORIGINAL_EXAMPLE.replace('"6:00:00"', "6:00"), [], "error: hardware.gen.time: got the number 360"),
    (None, ["--set", "hardware.gen.tme=1"], "error: --set hardware.gen.tme: unknown key"),
    (None, ["--set", "blanket_overlap=8"], "error: blanket_overlap: 8 must be smaller than the model's blanket_size 8"),
    (None, ["--set", "precision=float64"], "error: precision: 'float64' — choose one of"),
    ("model_path: [oops\n", [], "error: config: "),
    ("- a\n- b\n", [], "error: config: "),
    (None, ["--set", "model_path=/no/such/model"], "error: model_path: '/no/such/model' does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "args", "start"), ERRORS)
def test_errors_exit_2_with_one_line(model: Path, tmp_path: Path, text, args, start):
    config = write_config(tmp_path / "run.yaml", text if text is not None else ORIGINAL_EXAMPLE)
    result = plan(str(config), "--set", f"model_path={model}", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path: Path):
    result = plan(str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: config: {tmp_path / 'nope.yaml'} does not exist — give the path of a run config YAML"
    )


class Payload:
    """Pickled into a checkpoint: unpickling it would run code."""

    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize(
    ("damage", "start"),
    [
        ("garbage", "error: checkpoint "),
        ("pickled object", "error: checkpoint "),
        ("shapes", "error: checkpoint "),
        ("os:system", "error: backbone.target: 'os:system' is neither an nn.Module subclass"),
    ],
)
def test_a_bad_model_is_refused_before_anything_starts(tmp_path: Path, damage, start):
    """Attack: a garbage or pickled checkpoint passed ``plan`` (and ``run`` failed every member
    inside the workers); a card naming ``os:system`` ran a command. Both commands refuse them
    now, one line, exit 2, nothing written, nothing run."""
    import torch
    import yaml

    model = write_model_dir(tmp_path / "model", make_card(archive=None))
    best = model / "model_best.pt"
    proof = tmp_path / "ran"
    if damage == "garbage":
        best.write_bytes(b"\x00not a checkpoint" * 64)
    elif damage == "pickled object":
        torch.save({**torch.load(best, weights_only=True), "x": Payload()}, best)
    elif damage == "shapes":
        torch.save({"world_fingerprint": torch.zeros(3)}, best)
    else:
        card = yaml.safe_load((model / "card.yaml").read_text())
        card["backbone"] = {"target": "os:system", "kwargs": {"command": f"touch {proof}"}}
        (model / "card.yaml").write_text(yaml.safe_dump(card))
    config = write_config(tmp_path / "run.yaml", ORIGINAL_EXAMPLE)
    args = ("--set", f"model_path={model}", "--set", f"output_dir={tmp_path / 'runs'}")
    for command in ("plan", "run"):
        result = subprocess.run(
            [PRIORFLOW, command, str(config), *args, "--set", "hardware.backend=local"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), (command, result.stderr)
        assert "code ran" not in result.stdout + result.stderr and not proof.exists()
        assert not (tmp_path / "runs").exists() and not (tmp_path / ".prefect").exists()


BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize(
    ("where", "args", "start"),
    [
        ("config", [], "error: config: "),  # ... an alias (*a) at line 36 — aliases are not read
        (
            "set",
            ["--set", "check.plots={" + ", ".join(BOMB.splitlines()) + "}"],
            "error: --set check.plots: an alias",
        ),
        ("card", [], "error: model card "),
        (
            None,
            ["--set", "diffusion.num_steps=1000000000"],
            "error: diffusion.num_steps: 1000000000 — must be <= 10000",
        ),
        (
            None,
            ["--set", 'trajectory_sizes="1-1000000000"'],
            "error: trajectory_sizes: 1000000000 states is more than",
        ),
        (
            None,
            ["--set", 'trajectory_sizes="1-2000"'],
            "error: trajectory_sizes: '1-2000' makes more than 1000 sizes",
        ),
        (
            None,
            ["--set", "trajectory_sizes=99999999999999999999999"],
            "error: trajectory_sizes: 99999999999999999999999 states",
        ),
        (
            None,
            ["--set", "num_samples_per_date=100000000"],
            "error: num_samples_per_date: 100000000 — must be <= 10000",
        ),
        (
            None,
            ["--set", "num_samples_per_date=9000", "--set", 'trajectory_sizes="20-40"'],
            "error: num_samples_per_date: 9000 members x 2 dates x 21 sizes",
        ),
        (
            None,
            ["--set", 'trajectory_sizes="900000"', "--set", 'hardware.gen.ram="1GB"'],
            "error: trajectory_sizes: a trajectory of 900,000 states needs at least",
        ),
        (
            None,
            [
                "--set",
                'trajectory_sizes="400000"',
                "--set",
                "members_per_task=4",
                "--set",
                'hardware.gen.ram="1GB"',
            ],
            "error: trajectory_sizes: 4 trajectories of 400,000 states (members_per_task) need",
        ),
        (
            None,
            ["--set", "members_per_task=1000"],
            "error: members_per_task: 1000 — must be <= 256",
        ),
    ],
)
def test_unbounded_inputs_are_refused_in_one_line(model: Path, tmp_path: Path, where, args, start):
    """Attacks: a YAML alias bomb (config, card or --set) spun at 100 % CPU past 1 GB; huge
    steps, sizes or members went on to eat memory or time. Each is one line and exit 2 now."""
    import shutil

    text = ORIGINAL_EXAMPLE
    model_path = model
    if where == "config":
        text = ORIGINAL_EXAMPLE + BOMB
    if where == "card":
        model_path = Path(shutil.copytree(model, tmp_path / "model"))
        (model_path / "card.yaml").write_text((model_path / "card.yaml").read_text() + BOMB)
    config = write_config(tmp_path / "run.yaml", text)
    result = plan(str(config), "--set", f"model_path={model_path}", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr
    assert "Traceback" not in result.stderr
    if where is not None:
        assert "aliases are not read" in lines[0]


def test_plan_says_walltimes_in_words_and_what_the_backend_ignores(model: Path, tmp_path: Path):
    result = plan(
        str(CONFIGS / "demo.yaml"),
        "--set", f"model_path={model}",
        "--set", "archive=none.zarr",
        "--set", 'hardware.gen.time="6:00"',
        "--set", "hardware.gen.partition=gpu",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "time 6:00 = 6 min, partition gpu" in out  # SLURM's reading: MM:SS
    assert "time 0:10:00 = 10 min" in out  # aggregate
    assert (
        "ignored    hardware.gen.partition, hardware.gen.time, hardware.aggregate.time,"
        " hardware.aggregate.ram (not used with backend local)"
    ) in out
    workers = next(line for line in out.splitlines() if line.startswith("workers    "))
    assert "torch thread" in workers and "(hardware.gen.cpus; this machine: " in workers
    assert "run time   no estimate: no earlier run of this model on cpu in float32" in out
    assert result.stderr == ""


def test_plan_warns_when_a_walltime_is_shorter_than_the_estimate(tmp_path: Path, tiny_world):  # noqa: F811
    from priorflow.config.values import duration_words
    from tests.run.test_estimate import SLOWEST, make_earlier_run

    runs = tmp_path / "runs"
    make_earlier_run(tiny_world, runs)
    config = write_run_config(
        tmp_path / "long.yaml",
        tiny_world["model"],
        tiny_world["archive"],
        trajectory_sizes="400",  # 133 blankets
        diffusion={"num_steps": 2000, "sampler": {"type": "lms"}},
        output_dir=str(runs),
        hardware={"backend": "slurm", "max_workers": 2, "gen": {"gpus": 0, "time": "0:10:00"}},
    )
    before = sorted(tmp_path.rglob("*"))
    result = plan(str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    task = SLOWEST * 2000 * 133
    assert result.stderr.splitlines() == [
        "warning: hardware.gen.time: 0:10:00 = 10 min is shorter than a worker job's estimated"
        f" run time, ~{duration_words(2 * task)} (2 tasks of up to ~{duration_words(task)});"
        " give the jobs more time (or more hardware.max_workers)"
    ]
    assert f"run time   ~{duration_words(task)} for the longest task (2000 evaluations" in (
        result.stdout
    )
    assert f"a worker job runs up to 2 tasks (2 workers): ~{duration_words(2 * task)}" in (
        result.stdout
    )
    assert sorted(tmp_path.rglob("*")) == before  # wrote nothing
    roomy = plan(str(config), "--set", 'hardware.gen.time="1:00:00"', cwd=tmp_path)
    assert roomy.returncode == 0 and roomy.stderr == ""
