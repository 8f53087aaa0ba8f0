"""``priorflow train``: trains into a model directory, resumes, and reports user errors in one
line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import main
from priorflow.data.synthetic import SyntheticWorld
from priorflow.data.synthetic_archive import write_synthetic_archive
from priorflow.models.loading import load_model

ARGS = [
    "--steps", "4", "--batch-size", "2", "--blanket-size", "4", "--channels", "4,8",
    "--embedding", "8", "--val-every-days", "3", "--val-blankets", "4", "--eval-every", "2",
    "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("archive") / "tiny.zarr"
    world = SyntheticWorld((2, 4, 8), seed=0)
    return write_synthetic_archive(path, "2000-01-01", "2000-01-06", world=world)


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code or 0


def test_train_writes_a_loadable_model(archive, tmp_path, capsys):
    out = tmp_path / "model"
    assert run(["train", "--archive", str(archive), "--out", str(out), *ARGS]) == 0
    assert "trained" in capsys.readouterr().out
    model = load_model(out)
    assert not Path(model.card.archive).is_absolute()  # relative to the model directory
    assert (out / model.card.archive).resolve() == Path(archive).resolve()
    assert model.card.state_shape == (2, 4, 8)
    assert model.card.backbone.kwargs["channels"] == [4, 8]
    assert model.card.metadata["archive_world"]["kwargs"]["shape"] == [2, 4, 8]
    # the same command with more steps continues
    more = [*ARGS]
    more[more.index("--steps") + 1] = "6"
    assert run(["train", "--archive", str(archive), "--out", str(out), *more]) == 0
    assert "resumed from step 4" in capsys.readouterr().out
    assert load_model(out).card.metadata["trained_steps"] == 6


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--channels", "4,x"], "error: --channels"),
        (["--lr", "-1"], "error: lr"),
        (["--blanket-size", "500"], "error: blanket_size"),
        (["--channels", "4,8,8,8"], "error: state_shape"),
        (["--upsampling", "bicubic"], "error: backbone.kwargs.upsampling"),
    ],
)
def test_user_errors(archive, tmp_path, capsys, extra, expected):
    argv = ["train", "--archive", str(archive), "--out", str(tmp_path / "m"), *ARGS, *extra]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected) and "\n" not in err
    assert not (tmp_path / "m").exists()


def test_missing_archive(tmp_path, capsys):
    argv = ["train", "--archive", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "m")]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "none.zarr" in err and "\n" not in err
