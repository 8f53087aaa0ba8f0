"""Atomic replacement of a finished directory: readers see the old one or the new one, never half.

Writers build a directory under a temporary name beside its final place, then call
:func:`move_into_place`. A crash before that leaves only the temporary directory behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


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
