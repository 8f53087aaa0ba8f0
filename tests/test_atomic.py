"""The one atomic writer: readers see the old file or the new one; a failure leaves nothing."""

from __future__ import annotations

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
