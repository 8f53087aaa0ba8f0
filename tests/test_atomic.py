"""The one atomic writer: readers see the old file or the new one; a failure leaves nothing."""

from __future__ import annotations

import os
import stat

import pytest

from priorflow.atomic import staging_directory, write_bytes, write_file, write_text


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "mark.json"
    write_text(path, "old")
    write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["mark.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_text(tmp_path / "card.yaml", "old")

    def half_then_fail(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.yaml"]


def test_staging_directory_moves_in_on_success_only(tmp_path):
    final = tmp_path / "check"
    with staging_directory(final) as tmp:
        (tmp / "report.md").write_text("first")
    assert (final / "report.md").read_text() == "first"
    with pytest.raises(RuntimeError), staging_directory(final) as tmp:
        (tmp / "report.md").write_text("second")
        raise RuntimeError("interrupted")
    assert (final / "report.md").read_text() == "first"  # untouched
    with staging_directory(final) as tmp:
        (tmp / "other.md").write_text("third")
    assert [p.name for p in final.iterdir()] == ["other.md"]  # replaced whole
    assert [p.name for p in tmp_path.iterdir()] == ["check"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o027, 0o750)])
def test_a_staged_directory_has_the_permissions_of_mkdir(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with staging_directory(tmp_path / "store") as tmp:
            (tmp / "data").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == mode  # not mkdtemp's 0700
