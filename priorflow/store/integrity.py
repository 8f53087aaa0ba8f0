"""Whether the data of a run is what its members wrote: every member against its done mark.

A done mark holds the sha256 of the float32 bytes its job wrote. Anything that changed the data
afterwards (a deleted chunk file reads back as NaN, zeros written over a member, two members'
chunks swapped, a truncated file) makes the hash differ. Everything that reads a run's data
back checks it first: ``priorflow verify`` (each chunk read once), the prior check, the export,
and a rerun, which regenerates exactly the damaged members (:func:`damaged_jobs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.errors import StoreError
from priorflow.plan import Job, RunPlan
from priorflow.store.layout import (
    MARKS_DIR,
    has_store,
    member_names,
    read_store_attrs,
    resolve_group,
    store_path,
)
from priorflow.store.members import digest, read_mark


@dataclass(frozen=True)
class MemberProblem:
    """A member whose data cannot be trusted: its job name and why."""

    group: str
    name: str
    reason: str


def member_problem(name: str, mark: Any, seed: int, values: np.ndarray) -> str | None:
    """Why ``values`` (float32, as read back) are not what the member wrote, or None.

    ``mark`` is the parsed done mark (None: there is none).
    """
    if mark is None:
        return "has no done mark"
    if not isinstance(mark, dict):
        return "its done mark is not valid JSON"
    if mark.get("seed") != seed or mark.get("name") != name:
        return f"its done mark is for another job (seed {mark.get('seed')}, the store's {seed})"
    if digest(values) != mark.get("sha256"):
        return "its data does not match its done mark (sha256)"
    return None


def _parsed(path: Path) -> Any:
    """The mark at ``path`` parsed; None when there is none; ``False`` when it is not JSON."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return False


def iter_members(
    run_dir: str | os.PathLike[str], group: str
) -> Iterator[tuple[int, int, str, np.ndarray, str | None]]:
    """Each member of ``group`` read once, in date then member order:
    ``(date index, member, job name, values (T0, *S) float32, problem or None)``."""
    import zarr

    run_dir = Path(run_dir)
    store = store_path(run_dir)
    attrs = read_store_attrs(store)
    names = member_names(attrs["priorflow_schema"], group)
    node = zarr.open_group(str(store), path=group, mode="r")
    latent, seeds = node["latent"], node["seed"][...]
    marks = run_dir / MARKS_DIR / group
    for d, row in enumerate(names):
        for m, name in enumerate(row):
            values = np.asarray(latent[d, m], dtype="<f4")
            mark = _parsed(marks / f"{name}.json")
            yield d, m, name, values, member_problem(name, mark, int(seeds[d, m]), values)


def verify_run(
    run_dir: str | os.PathLike[str],
    sizes: list[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[int, list[MemberProblem]]:
    """Check every member of the run (or of ``sizes``) against its done mark, reading each
    chunk once. Returns ``(members checked, problems)``.

    Raises:
        StoreError: ``run_dir`` holds no priorflow store.
    """
    if not has_store(run_dir):
        raise StoreError(
            f"run: {run_dir} holds no {store_path(run_dir).name}; give a run directory"
        )
    attrs = read_store_attrs(store_path(run_dir))
    groups = (
        [resolve_group(attrs, size)[0] for size in sizes]
        if sizes
        else list(attrs["priorflow_schema"]["groups"])
    )
    checked, problems = 0, []
    for group in groups:
        for _, _, name, _, problem in iter_members(run_dir, group):
            checked += 1
            if problem is not None:
                problems.append(MemberProblem(group, name, problem))
            if progress is not None:
                progress(group, checked, len(problems))
    return checked, problems


def refuse_damage(problems: list[MemberProblem], what: str) -> None:
    """Raise one line naming the damaged members (what ``check`` and ``export`` do)."""
    if not problems:
        return
    shown = ", ".join(f"{p.name} ({p.reason})" for p in problems[:3])
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise StoreError(
        f"{what}: {len(problems)} members cannot be trusted: {shown}{more} — run it again with the"
        " same run_id to regenerate them (priorflow verify RUN lists them)"
    )


def damaged_jobs(run_dir: str | os.PathLike[str], plan: RunPlan) -> list[Job]:
    """The done jobs of ``plan`` whose data no longer matches their mark (each chunk read once).

    A rerun deletes their marks, so that exactly these members are generated again.
    """
    import zarr

    store = store_path(run_dir)
    damaged = []
    for size in plan.sizes:
        latent = zarr.open_array(str(store), path=f"{size.group}/latent", mode="r")
        for job in size.jobs:
            mark = read_mark(run_dir, job)
            if mark is None:
                continue  # not done: generated anyway
            values = np.asarray(latent[job.date_index, job.member], dtype="<f4")
            if member_problem(job.name, mark, job.seed, values) is not None:
                damaged.append(job)
    return damaged
