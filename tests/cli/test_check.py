"""``priorflow check RUN``: exit 0 on pass, 1 on fail, 2 on a user error; verdict and numbers."""

from __future__ import annotations

import pytest

from cli import main
from priorflow.evaluation.check_folders import latest_check
from tests._check_runs import copy_run, shared_archive, shared_exact_run


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    shared_archive(tmp_path_factory)
    return shared_exact_run(tmp_path_factory)


@pytest.fixture
def run(exact_run, tmp_path):
    return copy_run(exact_run, tmp_path / "run")


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


def test_pass_prints_the_verdict_and_numbers(run, capsys):
    assert _main(["check", str(run), "--set", "check.plots=false"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"prior check: PASS  ({run})")
    assert "48h (48 states)" in out
    for word in ("prior", "climatology", "persistence", "seam index", "report", "metrics"):
        assert word in out
    check = latest_check(run)
    assert (check / "report.md").exists()
    assert f"check    {check} (latest: {run / 'check' / 'latest'})" in out
    assert f"report   {check / 'report.md'}" in out


def test_fail_prints_the_reasons_and_exits_1(run, capsys):
    code = _main(
        [
            "check",
            str(run),
            "--set",
            "check.max_seam_index=1.01",
            "--set",
            "check.plots=no",
            "--set",
            "check.composition=fail",
            "--set",
            "check.blanket_members=8",
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert out.startswith("prior check: FAIL")
    assert "  48h seams: channel" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "check.max_bais=1"], "error: check.max_bais: unknown key"),
        (["--set", "max_bias=1"], "error: --set 'max_bias=1': not check.<key>=<value>"),
        (["--archive", "/nonexistent/archive.zarr"], "error: archive: /nonexistent/archive.zarr"),
    ],
)
def test_user_errors_exit_2_with_one_line(run, capsys, args, message):
    assert _main(["check", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "Traceback" not in err
    assert not (run / "check").exists()


def test_missing_run_is_a_user_error(tmp_path, capsys):
    assert _main(["check", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith(f"error: run: {tmp_path / 'missing'} holds no")
