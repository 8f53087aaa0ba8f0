"""One folder per check, ``latest`` the newest: every check kept, written whole or not at all,
and nothing priorflow did not write replaced or removed."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta, timezone

import pytest

from priorflow.errors import StoreError
from priorflow.evaluation.check_folders import (
    folder_name,
    latest_check,
    list_checks,
    new_check,
)

BEGAN = datetime(2026, 12, 2, 8, 15, 30, tzinfo=UTC)


def _write(run, began=BEGAN, text="# Prior check: **PASS**"):
    with new_check(run, began) as new:
        (new.staging / "report.md").write_text(text)
    return new.path


def test_folder_names_are_the_utc_time_the_check_began():
    assert folder_name(BEGAN) == "20261202T081530Z"
    brussels = timezone(timedelta(hours=1))
    assert folder_name(datetime(2026, 12, 2, 9, 15, 30, tzinfo=brussels)) == "20261202T081530Z"


def test_every_check_is_kept_and_latest_points_at_the_newest(tmp_path):
    first = _write(tmp_path, text="first")
    second = _write(tmp_path, text="second")  # the same second: a suffix
    third = _write(tmp_path, BEGAN + timedelta(seconds=1), text="third")
    assert [p.name for p in (first, second, third)] == [
        "20261202T081530Z", "20261202T081530Z-2", "20261202T081531Z",
    ]  # fmt: skip
    assert list_checks(tmp_path) == [first, second, third]
    assert os.readlink(tmp_path / "check" / "latest") == "20261202T081531Z"  # relative
    assert latest_check(tmp_path) == third
    assert (first / "report.md").read_text() == "first"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(first.stat().st_mode) == 0o777 & ~umask  # others may read it, as mkdir
    assert sorted(p.name for p in (tmp_path / "check").iterdir()) == [
        "20261202T081530Z",
        "20261202T081530Z-2",
        "20261202T081531Z",
        "latest",
    ]  # fmt: skip: no temporary folder or link left


def test_a_failed_check_leaves_nothing_and_latest_as_it_was(tmp_path):
    first = _write(tmp_path)
    with pytest.raises(RuntimeError), new_check(tmp_path, BEGAN) as new:
        (new.staging / "report.md").write_text("half")
        raise RuntimeError("interrupted")
    assert new.path is None
    assert list_checks(tmp_path) == [first]
    assert latest_check(tmp_path) == first
    assert [p.name for p in (tmp_path / "check").iterdir() if p.name.startswith(".")] == []


def test_the_flat_layout_of_earlier_versions_is_left_alone(tmp_path):
    legacy = tmp_path / "check"
    (legacy / "metrics.zarr").mkdir(parents=True)
    (legacy / "report.md").write_text("old report")
    (legacy / "48h-plumes.png").write_bytes(b"png")
    path = _write(tmp_path)
    assert latest_check(tmp_path) == path
    assert (legacy / "report.md").read_text() == "old report"
    assert (legacy / "48h-plumes.png").read_bytes() == b"png"
    assert list_checks(tmp_path) == [path]


def test_what_priorflow_did_not_write_is_refused_not_replaced(tmp_path):
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "latest").write_text("my notes")
    with pytest.raises(StoreError, match=r"^check: .*latest is not the symbolic link") as caught:
        _write(tmp_path)
    assert "\n" not in str(caught.value)
    assert (tmp_path / "check" / "latest").read_text() == "my notes"
    assert list_checks(tmp_path) == []

    other = tmp_path / "other"
    other.mkdir()
    (other / "check").write_text("a file")
    with pytest.raises(StoreError, match=r"^check: .*check is not a folder"):
        _write(other)


def test_latest_is_verified_when_read(tmp_path):
    with pytest.raises(StoreError, match=r"^check: .*latest is missing .* run priorflow check"):
        latest_check(tmp_path)
    _write(tmp_path)
    latest = tmp_path / "check" / "latest"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.md").write_text("not a check")
    for target in ("../elsewhere", str(elsewhere), "20261202T081530Z/..", "nothing"):
        latest.unlink()
        os.symlink(target, latest)
        with pytest.raises(StoreError, match=r"^check: .*latest points to .*, not a check folder"):
            latest_check(tmp_path)
    # the next check points it right again
    path = _write(tmp_path, BEGAN + timedelta(hours=1))
    assert latest_check(tmp_path) == path


def test_a_file_system_without_links_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)
    with pytest.raises(StoreError, match=r"^check: cannot point .*latest at 20261202T081530Z"):
        _write(tmp_path)
    assert [p.name for p in (tmp_path / "check").iterdir()] == ["20261202T081530Z"]
