"""The one way priorflow writes files: build beside the target, flush, then rename into place.

Readers see the old file (or directory) or the new one, never half of one; a crash leaves at
most a temporary ``.<name>.tmp-*`` beside the target, which the writer removes when it can.

- :func:`write_file` / :func:`write_bytes` / :func:`write_text`: one file;
- :func:`staging_directory`: a directory built under a temporary name, moved into place when the
  block ends without an error (:func:`move_into_place`), removed otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file or directory to disk (best effort: some filesystems refuse it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_file(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` atomically: ``write(handle)`` fills a temporary file beside it, which is
    flushed and renamed over ``path``. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_file(path, lambda handle: handle.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished directory ``tmp`` to ``final``, replacing what is there.

    An existing ``final`` is first renamed aside and removed only after ``tmp`` took its place.
    """
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    fsync_path(final.parent)


def _umask() -> int:
    """The process's umask (read from ``/proc`` on Linux, where setting it to read it would race
    with other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_directory(parent: str | os.PathLike[str], prefix: str) -> Path:
    """A new private-named directory in ``parent`` with the permissions of ``mkdir`` (``0o777``
    less the umask), not ``mkdtemp``'s 0700: it is renamed into place and others read it."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def staging_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary directory beside ``final``; moved into place when the block succeeds.

    On an error (or an interrupt) the temporary directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_directory(final.parent, f".{final.name}.tmp-")
    try:
        yield tmp
        move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
