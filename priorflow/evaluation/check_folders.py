"""Where the prior checks of a run are kept: one folder per check, ``latest`` the newest. ::

    <run_dir>/check/20261202T081530Z/   a check: metrics.zarr, report.md, PNGs (never removed)
    <run_dir>/check/20261203T020412Z/   the next one
    <run_dir>/check/latest -> 20261203T020412Z   a relative symbolic link

A folder is named by the UTC time its check began (``%Y%m%dT%H%M%SZ``, ``-2``, ``-3``... when
that name is taken), built under a temporary name beside it and renamed into place whole; then
``latest`` is pointed at it by a temporary link renamed over the old one (:func:`os.replace`),
so a reader sees the previous check or the new one, never half of one. Earlier checks are
kept. What priorflow did not write (a ``report.md`` of the flat layout of earlier versions, a
file of the user's) is left alone; a ``latest`` that is not a symbolic link is refused, not
replaced.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from priorflow.atomic import fsync_path, temporary_directory
from priorflow.errors import StoreError

__all__ = [
    "CHECK_DIR",
    "LATEST",
    "NewCheck",
    "check_root",
    "folder_name",
    "latest_check",
    "list_checks",
    "new_check",
    "prepare_root",
]

CHECK_DIR = "check"
LATEST = "latest"
_NAME = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


def check_root(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>/check``."""
    return Path(run_dir) / CHECK_DIR


def folder_name(when: datetime) -> str:
    """The folder of a check that began at ``when`` (naive: UTC): ``20261202T081530Z``."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y%m%dT%H%M%SZ")


def prepare_root(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>/check``, refused (one line) when it or its ``latest`` is something priorflow
    would have to overwrite: called before a check does its work."""
    root = check_root(run_dir)
    if root.exists() and not root.is_dir():
        raise StoreError(
            f"check: {root} is not a folder; move it away so the checks can be kept there"
        )
    latest = root / LATEST
    if latest.exists() and not latest.is_symlink():
        raise StoreError(
            f"check: {latest} is not the symbolic link priorflow writes; move it away so it can "
            "point at the newest check"
        )
    return root


def list_checks(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Every check folder of a run, oldest first (by name: the UTC time it began)."""
    root = check_root(run_dir)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if _NAME.match(p.name) and p.is_dir() and not p.is_symlink()
    ]
    return sorted(found, key=lambda p: (p.name[:16], int(p.name[17:] or 1)))


def latest_check(run_dir: str | os.PathLike[str]) -> Path:
    """The newest check folder (``<run_dir>/check/latest``, verified: a relative link to a
    folder named like a check, directly inside ``<run_dir>/check``, holding ``report.md``).

    Raises:
        StoreError: one line when there is no ``latest`` link, or it does not name a check
            folder inside ``<run_dir>/check``.
    """
    root = check_root(run_dir)
    latest = root / LATEST
    if not latest.is_symlink():
        raise StoreError(
            f"check: {latest} is missing (or not a link): the run has no check yet — run "
            f"priorflow check {Path(run_dir)}"
        )
    target = os.readlink(latest)
    resolved = latest.resolve()
    if (
        not _NAME.match(target)
        or resolved.parent != root.resolve()
        or not (resolved / "report.md").is_file()
    ):
        raise StoreError(
            f"check: {latest} points to {target!r}, not a check folder inside {root}; remove the "
            f"link and run priorflow check {Path(run_dir)} again"
        )
    return root / target


@dataclass
class NewCheck:
    """A check being written: fill ``staging``; ``path`` is its folder once the block ended."""

    staging: Path
    path: Path | None = None


@contextlib.contextmanager
def new_check(run_dir: str | os.PathLike[str], began: datetime) -> Iterator[NewCheck]:
    """Build a check in a temporary folder inside ``<run_dir>/check``; when the block ends
    without an error, rename it to a free name from ``began`` and point ``latest`` at it (see
    the module docstring). On an error nothing is left behind and ``latest`` is untouched."""
    root = prepare_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = folder_name(began)
    staging = temporary_directory(root, f".{name}.tmp-")
    new = NewCheck(staging)
    try:
        yield new
        new.path = _rename_free(staging, root, name)
        _point_latest(root, new.path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _rename_free(staging: Path, root: Path, name: str) -> Path:
    """Rename ``staging`` to ``root/name`` or the first free ``name-2``, ``name-3``..."""
    for n in range(1, 10_000):
        final = root / (name if n == 1 else f"{name}-{n}")
        if final.exists() or final.is_symlink():
            continue
        try:
            os.rename(staging, final)  # onto a folder another check just made: refused
        except OSError:
            if final.exists():
                continue
            raise
        fsync_path(root)
        return final
    raise StoreError(f"check: {root} holds 9999 checks named {name}; move some away")


def _point_latest(root: Path, name: str) -> None:
    """``root/latest`` -> ``name`` (relative) via a temporary link renamed over the old one;
    read back to verify."""
    latest = root / LATEST
    prepare_root(root.parent)  # the user may have put something there meanwhile
    tmp = root / f".{LATEST}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.symlink(name, tmp, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError as error:  # a file system without symbolic links
        raise StoreError(
            f"check: cannot point {latest} at {name} ({error.strerror}); the check is written "
            f"in {root / name} — keep the runs on a file system with symbolic links"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_path(root)
    if os.readlink(latest) != name:  # another check renamed its link in between: newer
        return
    latest_check(root.parent)
