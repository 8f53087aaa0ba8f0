"""The run config: the original example validates; every bad value is one line naming its key."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from priorflow.config import (
    RunConfig,
    config_from_mapping,
    format_sizes,
    load_config,
    make_run_id,
    parse_overrides,
    slurm_time_seconds,
)
from priorflow.config.values import time_words
from priorflow.core.dates import parse_trajectory_sizes
from priorflow.errors import ConfigError
from tests._runs import CONFIGS, ORIGINAL_EXAMPLE, write_config


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return write_config(tmp_path / "conf" / "example.yaml", ORIGINAL_EXAMPLE)


def test_original_example_validates_unchanged(example: Path):
    config = load_config(example)
    assert config.model_path == "/path/to/model"
    assert config.model_target == "best"
    assert config.diffusion.num_steps == 64
    assert config.diffusion.sampler.type == "lms"
    assert config.diffusion.sampler.config == {"grid": "uniform", "order": 3}
    assert config.trajectory_sizes == [72]
    assert config.num_samples_per_date == 2
    assert config.start_dates == [datetime(2000, 4, 3, 0), datetime(2000, 4, 20, 12)]
    assert config.blanket_overlap == 4
    assert config.precision == "float16"
    hardware = config.hardware
    assert (hardware.backend, hardware.account, hardware.gpus_per_node) == (
        "slurm",
        "my_account",
        4,
    )
    assert (hardware.gen.cpus, hardware.gen.ram, hardware.gen.time) == (8, "64GB", "6:00:00")
    assert (hardware.gen.partition, hardware.gen.gpus) == ("gpu", 1)
    assert (hardware.aggregate.cpus, hardware.aggregate.ram) == (4, "32GB")
    assert (hardware.aggregate.time, hardware.aggregate.partition) == ("1:00:00", "cpu")
    assert hardware.gen.time_seconds == 6 * 3600
    # the added keys get their defaults
    assert (config.seed, config.fold_mode, config.archive, config.blanket_batch) == (
        0,
        "symmetrical",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [("6:00", "6:00 = 6 min"), ("6:00:00", "6:00:00 = 6 h"), ("90", "90 = 1 h 30 min"),
     ("1:30", "1:30 = 1 min 30 s"), ("1-12", "1-12 = 1 d 12 h"), ("0:30:00", "0:30:00 = 30 min"),
     ("2-03:04:05", "2-03:04:05 = 2 d 3 h 4 min 5 s")],
)  # fmt: skip
def test_times_in_words_as_slurm_reads_them(text: str, words: str):
    assert time_words(text) == words


@pytest.mark.parametrize("name", ["example", "demo", "slurm", "nightly"])
def test_shipped_configs_validate(name: str):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert Path(config.model_path) == (CONFIGS.parent / "models" / "reference").resolve()
    assert Path(config.output_dir) == (CONFIGS.parent / "runs").resolve()


def test_shipped_example_is_the_original_but_for_model_path_and_output_dir():
    shipped = yaml.safe_load((CONFIGS / "example.yaml").read_text())
    original = yaml.safe_load(ORIGINAL_EXAMPLE)
    assert shipped.pop("model_path") == "../models/reference"
    assert shipped.pop("output_dir") == "../runs"
    original.pop("model_path")
    assert shipped == original


def test_demo_is_local_and_longer_than_one_blanket():
    config = load_config(CONFIGS / "demo.yaml")
    assert config.hardware.backend == "local"
    assert config.trajectory_sizes == [72] and config.blanket_overlap == 4
    assert config.diffusion.sampler.type == "lms" and config.precision == "float32"
    assert Path(config.archive).name == "archive.zarr"
    assert 2 <= len(config.start_dates) <= 3 and config.num_samples_per_date == 2
    assert all(d.year in (2000, 2001) for d in config.start_dates)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, monkeypatch):
    text = ORIGINAL_EXAMPLE.replace("/path/to/model", "../models/m") + "archive: data/a.zarr\n"
    path = write_config(tmp_path / "a" / "b" / "run.yaml", text + "output_dir: out\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    assert config.model_path == str(tmp_path / "a" / "models" / "m")
    assert config.archive == str(tmp_path / "a" / "b" / "data" / "a.zarr")
    assert config.output_dir == str(tmp_path / "a" / "b" / "out")
    # --set paths are relative to the working directory
    config = load_config(path, ["model_path=mine", "archive=s3://bucket/a.zarr", "output_dir=o"])
    assert config.model_path == str(tmp_path / "mine")
    assert config.archive == "s3://bucket/a.zarr"
    assert config.output_dir == str(tmp_path / "o")


def test_the_default_output_dir_is_runs_next_to_the_config(tmp_path: Path, monkeypatch):
    """One rule for the file: the unset output_dir is relative to it, like every other path."""
    plain = write_config(tmp_path / "x" / "appa.yaml", ORIGINAL_EXAMPLE)
    for cwd in (tmp_path, tmp_path / "x", Path("/")):
        monkeypatch.chdir(cwd)
        assert load_config(plain).output_dir == str(tmp_path / "x" / "runs")
    # a mapping (a deployment's parameters): relative to its base directory
    data = yaml.safe_load(ORIGINAL_EXAMPLE)
    assert config_from_mapping(data, base_dir=tmp_path / "b").output_dir == str(
        tmp_path / "b" / "runs"
    )
    monkeypatch.chdir(tmp_path)
    assert config_from_mapping(data).output_dir == str(tmp_path / "runs")


@pytest.mark.parametrize(
    ("written", "where"),
    [
        ('output_dir: "{model_path}/prior"\n', "file"),
        ("output_dir: '{model_path}'\n", "file"),
        ('output_dir="{model_path}/prior"', "set"),
    ],
)
def test_output_dir_under_the_model_directory(tmp_path: Path, monkeypatch, written, where):
    text = ORIGINAL_EXAMPLE.replace("/path/to/model", "../lap")
    path = write_config(tmp_path / "cfg" / "run.yaml", text + (written if where == "file" else ""))
    monkeypatch.chdir(tmp_path / "cfg")
    config = load_config(path, [written] if where == "set" else [])
    lap = tmp_path / "lap"
    expected = lap if written.rstrip("\n").endswith("}'") else lap / "prior"
    assert config.output_dir == str(expected)
    assert config.run_dir == expected / str(config.run_id)
    # the resolved config holds the path itself: it reloads to the same place from anywhere
    again = write_config(tmp_path / "elsewhere" / "config.yaml", config.to_yaml())
    assert load_config(again).output_dir == str(expected)


def test_model_path_placeholder_follows_a_model_given_with_set(tmp_path: Path, monkeypatch):
    text = ORIGINAL_EXAMPLE + 'output_dir: "{model_path}/prior"\n'
    path = write_config(tmp_path / "cfg" / "run.yaml", text)
    monkeypatch.chdir(tmp_path)
    config = load_config(path, ["model_path=laps/7"])
    assert config.output_dir == str(tmp_path / "laps" / "7" / "prior")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("output_dir: {model_path}/prior\n", "error"),  # not YAML at all
        (
            "output_dir: {model_path}\n",
            'output_dir: {"model_path": null} — YAML read an unquoted {model_path} as a'
            ' mapping; quote it: output_dir: "{model_path}/prior"',
        ),
        (
            'output_dir: "runs/{model_path}"\n',
            "output_dir: 'runs/{model_path}' — the one placeholder is {model_path}, at the start,"
            ' e.g. output_dir: "{model_path}/prior"',
        ),
        (
            'output_dir: "{model}/prior"\n',
            "output_dir: '{model}/prior' — the one placeholder is {model_path}",
        ),
    ],
)
def test_bad_output_dir_placeholders_are_one_line(tmp_path: Path, line, message):
    path = write_config(tmp_path / "run.yaml", ORIGINAL_EXAMPLE + line)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = str(error.value)
    assert "\n" not in text
    if message == "error":
        assert text.startswith(f"config: {path} is not valid YAML")
    else:
        assert text.startswith(message), text


def test_overrides_are_yaml_values(example: Path):
    config = load_config(
        example,
        [
            "diffusion.num_steps=32",
            "precision=null",
            'start_dates=["2001-01-02 6h", 2001-03-04]',
            "diffusion.sampler.type=pc",
            "diffusion.sampler.config=null",  # drop the lms settings
            "diffusion.sampler.config.corrections=2",
            "hardware.gen.gpus=auto",
            "hardware.gen.blankets_per_gpu=4",
            'hardware.gen.time="2-00:00:00"',
            "trajectory_sizes=24-26",
            "check.max_bias=0.3",
        ],
    )
    assert config.diffusion.num_steps == 32
    assert config.precision is None
    assert config.start_dates == [datetime(2001, 1, 2, 6), datetime(2001, 3, 4)]
    assert config.diffusion.sampler.type == "pc"
    assert config.diffusion.sampler.config == {"grid": "uniform", "corrections": 2, "delta": 0.01}
    assert config.hardware.gen.gpus == "auto" and config.hardware.gen.blankets_per_gpu == 4
    assert config.hardware.gen.time_seconds == 2 * 86400
    assert config.trajectory_sizes == [24, 25, 26]
    assert config.check.max_bias == 0.3 and config.check.enabled
    # later overrides win
    assert load_config(example, ["seed=1", "seed=2"]).seed == 2


def test_parse_overrides():
    assert parse_overrides(["seed=1", "diffusion.sampler.config.x.y=[1]"]) == [
        (("seed",), 1),
        (("diffusion", "sampler", "config", "x", "y"), [1]),
    ]
    with pytest.raises(ConfigError, match=r"^--set 'nothing': not key=value"):
        parse_overrides(["nothing"])


def test_resolved_config_reloads_equal(example: Path, tmp_path: Path):
    config = load_config(example, ["trajectory_sizes=24-26,48", "seed=7"])
    text = config.to_yaml()
    assert "time: '6:00:00'" in text  # stays a quoted string
    assert "trajectory_sizes: 24-26,48" in text
    again = load_config(write_config(tmp_path / "resolved.yaml", text))
    assert again.model_dump() == config.model_dump()
    assert again.run_id == config.run_id


def test_default_run_id_is_a_readable_timestamp_and_hash(example: Path):
    config = load_config(example)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", config.run_id)
    when = datetime(2026, 3, 14, 15, 30, 12)
    same = make_run_id(config, when)
    assert same.startswith("20260314-153012-")
    assert make_run_id(load_config(example), when) == same  # hash of the config, not of chance
    assert make_run_id(load_config(example, ["seed=1"]), when) != same
    assert load_config(example, ["run_id=nightly-2026.03.14"]).run_id == "nightly-2026.03.14"
    assert config.run_dir == Path(config.output_dir) / config.run_id


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 5400), ("5:30", 330), ("6:00:00", 21600), ("1-12", 129600), ("2-03:04", 183840),
     ("1-00:00:01", 86401), ("36:00:00", 129600)],
)  # fmt: skip
def test_slurm_times(text: str, seconds: int):
    assert slurm_time_seconds(text) == seconds


def test_format_sizes_round_trips():
    for sizes in ([72], [24, 25, 26], [1, 3, 4, 5, 9, 10]):
        assert parse_trajectory_sizes(format_sizes(sizes)) == sizes


# Every error: (override or file edit, the message's start, a piece of the message).
ERRORS = [
    (
        ["hardware.gen.time=6:00"],
        "hardware.gen.time: got the number 360",
        'SLURM reads "6:00" as 6 min, "6:00:00" as 6 h',
    ),
    (
        ["hardware.aggregate.time=1:00:00"],
        "hardware.aggregate.time: got the number 3600",
        'quote the time: SLURM reads "1:00:00" as 1 h',
    ),
    (["hardware.gen.time=45"], "hardware.gen.time: got the number 45", "quoted string"),
    (['hardware.gen.time="6h"'], "hardware.gen.time: '6h' — not a time", "HH:MM:SS"),
    (['hardware.gen.time="1:75:00"'], "hardware.gen.time: '1:75:00'", "not a time"),
    (['hardware.gen.time="0:00"'], "hardware.gen.time: '0:00'", "longer than zero"),
    (["hardware.gen.ram=64"], "hardware.gen.ram: got the number 64", '"64GB"'),
    (["hardware.gen.ram=lots"], "hardware.gen.ram: 'lots'", "with a unit"),
    (["hardware.gen.cpus=0"], "hardware.gen.cpus: 0 — must be >= 1", ""),
    (["hardware.gen.cpus=2.5"], "hardware.gen.cpus: 2.5 — must be a whole number", ""),
    (["hardware.gen.gpus=-1"], "hardware.gen.gpus: -1", "or auto"),
    (["hardware.gen.gpus=many"], "hardware.gen.gpus: 'many'", "or auto"),
    (["hardware.gen.gpus=8"], "hardware.gen.gpus: 8", "gpus_per_node (4)"),
    (["hardware.gen.gpus=auto"], "hardware.gen.blankets_per_gpu: missing", "auto"),
    (["hardware.gen.blankets_per_gpu=0"], "hardware.gen.blankets_per_gpu: 0", ">= 1"),
    (["hardware.backend=kubernetes"], "hardware.backend: 'kubernetes'", "local, slurm"),
    (["hardware.backend=address"], "hardware.address: missing", "tcp://"),
    (["hardware.max_workers=0"], "hardware.max_workers: 0", ">= 1"),
    (["hardware.gpus_per_node=-2"], "hardware.gpus_per_node: -2", ">= 0"),
    (["hardware=slurm"], "hardware: 'slurm' — must be a mapping", ""),
    (["model_target=worst"], "model_target: 'worst'", "best or last"),
    (["model_path=null"], "model_path: null", "string"),
    (["diffusion.num_steps=0"], "diffusion.num_steps: 0 — must be >= 1", ""),
    (["diffusion.num_steps=many"], "diffusion.num_steps: 'many'", "whole number"),
    (["diffusion.sampler.type=euler"], "diffusion.sampler.type: 'euler'", "pc, ddpm, ddim"),
    (["diffusion.sampler.config.ordr=2"], "diffusion.sampler.config.ordr: unknown key", "order"),
    (["diffusion.sampler.config.order=9"], "diffusion.sampler.config.order: 9", "1 to 6"),
    (["diffusion.sampler.config.order=0"], "diffusion.sampler.config.order: 0 is not valid", ""),
    (["diffusion.sampler.config.order=2.5"], "diffusion.sampler.config.order: 2.5 is not", ""),
    (
        ["diffusion.sampler.type=pc", "diffusion.sampler.config={delta: -1}"],
        "diffusion.sampler.config.delta: -1.0 is not valid",
        "(0, 1)",
    ),
    (
        ["diffusion.sampler.type=pc", "diffusion.sampler.config={corrections: true}"],
        "diffusion.sampler.config.corrections: True is not valid",
        "whole number",
    ),
    (
        ["diffusion.sampler.type=rewind", "diffusion.sampler.config={jump: 'yes'}"],
        "diffusion.sampler.config.jump: 'yes' is not valid",
        "true or false",
    ),
    (
        ["diffusion.sampler.type=ddim"],
        "diffusion.sampler.config.order: unknown key for sampler 'ddim'",
        "it takes grid",
    ),
    (["diffusion.sampler=lms"], "diffusion.sampler: 'lms' — must be a mapping", ""),
    (["trajectory_sizes=26-24"], "trajectory_sizes: '26-24'", "range"),
    (["trajectory_sizes=seventy"], "trajectory_sizes: 'seventy'", "'72'"),
    (["trajectory_sizes=0"], "trajectory_sizes:", ">= 1"),
    (["trajectory_sizes=72.5"], "trajectory_sizes: 72.5", '"24-26"'),
    (["num_samples_per_date=0"], "num_samples_per_date: 0 — must be >= 1", ""),
    (["num_samples_per_date=two"], "num_samples_per_date: 'two'", "whole number"),
    (["start_dates=[]"], "start_dates: empty", "at least one"),
    (["start_dates=[2000-13-01]"], "start_dates[0]: '2000-13-01'", "calendar date"),
    (['start_dates=["2000-04-03 0h", "2000-04-03 25h"]'], "start_dates[1]:", "hour"),
    (['start_dates=["2000-04-03 0h", "2000-04-03T00"]'], "start_dates[1]:", "repeats"),
    (["start_dates=yesterday"], "start_dates[0]: 'yesterday'", "YYYY-MM-DD"),
    (["start_dates=[3]"], "start_dates[0]: 3", "2000-04-03 0h"),
    (["blanket_overlap=-1"], "blanket_overlap: -1 — must be >= 0", ""),
    (["precision=float64"], "precision: 'float64'", "or null"),
    (["fold_mode=left"], "fold_mode: 'left'", "symmetrical, causal or average"),
    (["blanket_batch=0"], "blanket_batch: 0", ">= 1"),
    (["seed=-1"], "seed: -1 — must be >= 0", ""),
    (["seed=yes"], "seed: true — must be a whole number", ""),
    (["run_id=../elsewhere"], "run_id: '../elsewhere'", "directory"),
    (["output_dir=[1]"], "output_dir: [1] — must be text", ""),
    (["check=3"], "check: 3", ""),
    (["check.max_bias=-1"], "check.max_bias: -1", ""),
    (["check.metric=rmse"], "--set check.metric: unknown key", "max_bias"),
    (["sampler=lms"], "--set sampler: unknown key", "the config takes model_path"),
    (["diffusion.steps=3"], "--set diffusion.steps: unknown key", "num_steps"),
    (["hardware.gen.tme=1:00:00"], "--set hardware.gen.tme: unknown key (did you mean time?)", ""),
    (["hardware.account.name=x"], "--set hardware.account.name:", "not a section"),
    (["diffusion.num_steps"], "--set 'diffusion.num_steps': not key=value", ""),
    (["=3"], "--set '=3': not key=value", ""),
    (["seed=[1,"], "--set seed: '[1,' is not a YAML value", ""),
]


@pytest.mark.parametrize(("overrides", "start", "piece"), ERRORS)
def test_each_error_is_one_line_naming_the_key(example, overrides, start, piece):
    with pytest.raises(ConfigError) as caught:
        load_config(example, overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(start), message
    assert piece in message, message
    assert "validation error" not in message and "pydantic" not in message
    assert "(and" not in message  # exactly one problem here


FILE_ERRORS = [
    ("missing", None, "config: {path} does not exist"),
    ("list", "- model_path: x\n", "must be a mapping"),
    ("empty", "", "is empty"),
    ("bad yaml", "model_path: [unclosed\n", "is not valid YAML"),
    ("tab", "model_path:\n\t- x\n", "is not valid YAML"),
    ("twice", ORIGINAL_EXAMPLE + "seed: 1\nseed: 2\n", "seed: given twice (line 30)"),
    ("unquoted time", ORIGINAL_EXAMPLE.replace('"6:00:00"', "6:00"), "hardware.gen.time: got the"
     " number 360; YAML reads an unquoted 6:00 as a base-60 number — quote the time: SLURM reads"
     ' "6:00" as 6 min, "6:00:00" as 6 h'),
    ("unquoted h:m:s", ORIGINAL_EXAMPLE.replace('"1:00:00"', "1:00:00"), "hardware.aggregate.time:"
     " got the number 3600"),
    ("unknown top", ORIGINAL_EXAMPLE + "sampler: lms\n", "sampler: unknown key — the config takes"),
    ("unknown nested", ORIGINAL_EXAMPLE + "    spot: true\n", "hardware.aggregate.spot: unknown key"),
    ("missing key", ORIGINAL_EXAMPLE.replace("blanket_overlap: 4\n", ""), "blanket_overlap:"
     " missing — this key is required"),
    ("missing dates", ORIGINAL_EXAMPLE.replace('start_dates: ["2000-04-03 0h", "2000-04-20 12h"]\n',
     ""), "start_dates: missing"),
    ("two problems", ORIGINAL_EXAMPLE.replace("cpus: 8", "cpus: 0").replace("cpus: 4", "cpus: 0"),
     "hardware.gen.cpus: 0 — must be >= 1 (and 1 more problem)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "text", "expected"), FILE_ERRORS, ids=[c[0] for c in FILE_ERRORS]
)
def test_file_errors_are_one_line(tmp_path: Path, case: str, text: str | None, expected: str):
    path = tmp_path / "run.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert expected.format(path=path) in message, message


def test_config_is_strict_in_python_too():
    with pytest.raises(Exception, match="extra"):
        RunConfig.model_validate(
            {"model_path": "m", "trajectory_sizes": "72", "start_dates": ["2000-01-01"],
             "blanket_overlap": 0, "oops": 1}
        )  # fmt: skip


def test_config_from_a_mapping_follows_the_same_rules(example: Path, tmp_path: Path):
    from priorflow.config import config_from_mapping

    data = yaml.safe_load(ORIGINAL_EXAMPLE.replace("/path/to/model", "models/m"))
    config = config_from_mapping(data, ["seed=3", "run_id=x"], base_dir=tmp_path)
    assert config.model_path == str(tmp_path / "models" / "m") and config.seed == 3
    assert data["model_path"] == "models/m"  # the caller's mapping is not changed
    from_file = load_config(
        example,
        [
            "seed=3",
            "run_id=x",
            f"model_path={tmp_path / 'models/m'}",
            f"output_dir={tmp_path}/runs",
        ],
    )
    assert config.output_dir == str(tmp_path / "runs")  # the default, relative to base_dir
    assert config.model_dump() == from_file.model_dump()
    with pytest.raises(ConfigError, match=r"^hardware.gen.time: got the number 360"):
        config_from_mapping(data | {"hardware": {"gen": {"time": 360}}})
    with pytest.raises(ConfigError, match="^config: .* must be a mapping"):
        config_from_mapping(["model_path"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# batch-cluster fields, aggregation placement, run_id templates, blocks


def test_cluster_fields_and_aggregate_placement(example: Path):
    config = load_config(
        example,
        [
            "hardware.interface=ib0",
            'hardware.scheduler_host="10.0.0.1"',
            'hardware.job_prologue="module load cuda\\nsource env.sh\\n"',
            'hardware.job_directives_skip=["--mem"]',
            "hardware.local_directory=/scratch/me",
            "hardware.python=/opt/py/bin/python",
            "hardware.aggregate.where=worker",
        ],
    )
    hardware = config.hardware
    assert (hardware.interface, hardware.scheduler_host) == ("ib0", "10.0.0.1")
    assert hardware.job_prologue == ["module load cuda", "source env.sh"]
    assert hardware.job_directives_skip == ["--mem"]
    assert (hardware.local_directory, hardware.python) == ("/scratch/me", "/opt/py/bin/python")
    assert hardware.aggregate.where == "worker"
    defaults = load_config(example).hardware
    assert defaults.aggregate.where == "flow" and defaults.job_prologue is None
    with pytest.raises(ConfigError, match=r"^hardware\.aggregate\.where: 'gpu' — choose one of"):
        load_config(example, ["hardware.aggregate.where=gpu"])


def test_run_id_template_is_filled_with_the_date(example: Path):
    today = datetime.now().strftime("%Y%m%d")
    config = load_config(example, ['run_id="nightly-{now:%Y%m%d}"'])
    assert config.run_id == f"nightly-{today}" or config.run_id > f"nightly-{today}"  # midnight
    with pytest.raises(ConfigError, match=r"^run_id: 'n-\{when\}' — a template may only use"):
        load_config(example, ['run_id="n-{when}"'])
    with pytest.raises(ConfigError, match=r"^run_id: 'a/b-.*' — letters, digits"):
        load_config(example, ['run_id="a/b-{now:%Y}"'])


def _resolver(tmp_path: Path):
    """A resolver as the Prefect side gives one: kind and name -> config values."""
    saved = {
        ("model", "ref"): {"model_path": str(tmp_path / "m"), "model_target": "last"},
        ("archive", "arc"): {"archive": str(tmp_path / "a.zarr")},
        ("cluster", "hpc"): {
            "hardware": {"backend": "slurm", "account": "proj", "gen": {"cpus": 4, "gpus": 2}}
        },
        ("model", "bad"): {"model_path": "x", "seed": 3},
    }

    def resolve(kind: str, name: str) -> dict:
        if (kind, name) not in saved:
            raise ConfigError(f"blocks.{kind}: no block named {name!r}")
        return saved[(kind, name)]

    return resolve


def test_blocks_are_resolved_before_validation(tmp_path: Path):
    path = tmp_path / "run.yaml"
    data = yaml.safe_load(ORIGINAL_EXAMPLE)
    data.pop("model_path")
    data.pop("model_target")  # else the config's own target wins over the block's
    data["hardware"] = {"gpus_per_node": 4, "gen": {"cpus": 8}}
    data["blocks"] = {"model": "ref", "archive": "arc", "cluster": "hpc"}
    path.write_text(yaml.safe_dump(data))
    config = load_config(path, resolve_block=_resolver(tmp_path))
    assert config.model_path == str(tmp_path / "m") and config.model_target == "last"
    assert config.archive == str(tmp_path / "a.zarr")
    hardware = config.hardware
    assert (hardware.backend, hardware.account, hardware.gpus_per_node) == ("slurm", "proj", 4)
    assert (hardware.gen.cpus, hardware.gen.gpus) == (8, 2)  # the config's own key wins
    assert config.blocks.model_dump() == {"model": "ref", "archive": "arc", "cluster": "hpc"}
    resolved = config.resolved()
    assert "blocks" not in resolved  # the values are there; it reloads without Prefect
    again = tmp_path / "resolved.yaml"
    again.write_text(config.to_yaml())
    assert load_config(again) == config.model_copy(update={"blocks": type(config.blocks)()})


def test_block_errors_are_one_line(tmp_path: Path, example: Path):
    resolve = _resolver(tmp_path)
    with pytest.raises(
        ConfigError, match=r"^blocks: the config names Prefect blocks \(model: ref"
    ):
        load_config(example, ["blocks.model=ref"])
    with pytest.raises(
        ConfigError, match=r"^model_path: '/path/to/model' — blocks\.model \(ref\)"
    ):
        load_config(example, ["blocks.model=ref"], resolve_block=resolve)
    with pytest.raises(ConfigError, match=r"^blocks\.model: no block named 'nope'"):
        load_config(example, ["model_path=null", "blocks.model=nope"], resolve_block=resolve)
    with pytest.raises(ConfigError, match=r"^blocks\.model: 'bad' gave seed — a model block"):
        load_config(example, ["model_path=null", "blocks.model=bad"], resolve_block=resolve)
    with pytest.raises(ConfigError, match=r"^--set blocks\.modle: unknown key \(did you mean"):
        load_config(example, ["blocks.modle=ref"], resolve_block=resolve)


def test_nightly_config_is_the_demo_with_a_run_per_night():
    nightly = load_config(CONFIGS / "nightly.yaml")
    demo = load_config(CONFIGS / "demo.yaml")
    assert nightly.run_id == f"nightly-{datetime.now():%Y%m%d}"
    assert nightly.check.enabled is True
    assert nightly.check.learned and demo.check.learned  # the gate of issue 11
    same = {"run_id", "check"}
    assert nightly.model_dump(exclude=same) == demo.model_dump(exclude=same)


def test_ignored_keys_are_those_the_config_sets_and_its_backend_does_not_use(example: Path):
    from priorflow.config import ignored_keys

    assert ignored_keys(load_config(example).hardware) == {
        "aggregate.where flow": [
            f"hardware.aggregate.{k}" for k in ("cpus", "ram", "time", "partition")
        ]
    }
    local = load_config(example, ["hardware.backend=local", "hardware.aggregate.where=worker"])
    assert ignored_keys(local.hardware) == {
        "backend local": [
            "hardware.account", "hardware.gen.partition", "hardware.gen.time",
            "hardware.aggregate.partition", "hardware.aggregate.time", "hardware.aggregate.ram",
        ]
    }  # fmt: skip
    address = load_config(
        example, ["hardware.backend=address", "hardware.address=tcp://127.0.0.1:8786"]
    )
    assert ignored_keys(address.hardware)["backend address"] == [
        "hardware.account", *(f"hardware.{kind}.{key}" for kind in ("gen", "aggregate")
                              for key in ("cpus", "ram", "time", "partition"))
    ]  # fmt: skip
