r"""Aggregating one trajectory size: verify every member against its mark, summarise, consolidate.

Every member must have its done mark, and its data must hash to the mark's sha256 (read one
member at a time, so memory does not grow with the number of members). The per-member summaries
``member_mean/std/min/max/finite/seconds`` and the group attributes ``aggregated``,
``end_time``, ``summary`` and ``marks_sha256`` are written, and the metadata consolidated. When
the marks are unchanged since the last aggregation nothing is written, so rerunning a finished
run leaves every byte as it was.

The pooled statistics over the :math:`n` finite values :math:`v` of all members:
:math:`\bar v = \sum v / n`, :math:`s = \sqrt{\max(\sum v^2 / n - \bar v^2, 0)}`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from priorflow.errors import StoreError
from priorflow.store.attributes import flat_attrs, nested_attrs
from priorflow.store.integrity import member_problem
from priorflow.store.layout import (
    MARKS_DIR,
    consolidate,
    has_store,
    locked,
    member_names,
    read_store_attrs,
    resolve_group,
    store_path,
    to_json,
)
from priorflow.store.members import member_stats

SUMMARIES = ("mean", "std", "min", "max", "finite", "seconds")


def aggregate(run_dir: str | os.PathLike[str], size: int | str) -> dict[str, Any]:
    """Verify, summarise and consolidate one trajectory size (``72`` or ``"72h"``).

    Returns:
        ``{"group", "states", "members", "mean", "std", "min", "max", "non_finite" (job names),
        "seconds" (sum over members), "store", "end_time", "unchanged" (bool)}``.

    Raises:
        StoreError: missing members (named) or data that does not match its mark.
    """
    import zarr

    run_dir = Path(run_dir)
    store = store_path(run_dir)
    if not has_store(run_dir):
        raise StoreError(f"store: {store} does not exist")
    attrs = read_store_attrs(store)
    group, info = resolve_group(attrs, size)
    names = member_names(attrs["priorflow_schema"], group)
    marks_dir = run_dir / MARKS_DIR / group
    with locked(run_dir):
        raw = _read_marks(marks_dir, names, group)
        marks_sha256 = _marks_digest(raw)
        node = zarr.open_group(str(store), path=group, mode="r+")
        previous = nested_attrs(node.attrs.asdict())
        if previous.get("aggregated") and previous.get("marks_sha256") == marks_sha256:
            return dict(previous["summary"], unchanged=True)

        table, totals = _verify_members(node, names, raw)
        for key in SUMMARIES:
            node[f"member_{key}"][...] = table[key]
        end_time = datetime.now(UTC).isoformat(timespec="seconds")
        summary = to_json(
            {
                "group": group,
                "states": info["states"],
                "members": sum(len(row) for row in names),
                **totals.summary(),
                "seconds": float(np.nansum(table["seconds"])),
                "store": str(store),
                "end_time": end_time,
            }
        )
        node.attrs.update(
            flat_attrs(
                {
                    "aggregated": True,
                    "end_time": end_time,
                    "marks_sha256": marks_sha256,
                    "summary": summary,
                }
            )
        )
        consolidate(store)
    return dict(summary, unchanged=False)


def _read_marks(marks_dir: Path, names: list[list[str]], group: str) -> dict[str, bytes]:
    """The raw bytes of every member's mark; StoreError naming the members that have none."""
    raw: dict[str, bytes] = {}
    missing = []
    for row in names:
        for name in row:
            try:
                raw[name] = (marks_dir / f"{name}.json").read_bytes()
            except OSError:
                missing.append(name)
    if missing:
        total = sum(len(row) for row in names)
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise StoreError(
            f"{group}: {len(missing)} of {total} members are not done ({shown}) — run again"
            " with the same run_id to generate them"
        )
    return raw


def _marks_digest(raw: dict[str, bytes]) -> str:
    """One hash of every mark (names and bytes): whether anything changed since last time."""
    hasher = hashlib.sha256()
    for name in sorted(raw):
        hasher.update(name.encode() + b"\0" + raw[name] + b"\0")
    return hasher.hexdigest()


@dataclass
class _Totals:
    """Running sums of the finite members' values (see the module docstring)."""

    n: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    non_finite: list[str] | None = None

    def add(self, name: str, values: np.ndarray, stats: dict[str, Any]) -> None:
        if not stats["finite"]:
            self.non_finite = [*(self.non_finite or []), name]
            return
        v = values.astype(np.float64)
        self.n += v.size
        self.sum += float(v.sum())
        self.sumsq += float((v * v).sum())
        self.min = min(self.min, stats["min"])
        self.max = max(self.max, stats["max"])

    def summary(self) -> dict[str, Any]:
        n = self.n
        mean = self.sum / n if n else math.nan
        std = math.sqrt(max(self.sumsq / n - mean * mean, 0.0)) if n else math.nan
        return {
            "mean": mean,
            "std": std,
            "min": self.min if n else math.nan,
            "max": self.max if n else math.nan,
            "non_finite": list(self.non_finite or []),
        }


def _verify_members(
    node: Any, names: list[list[str]], raw: dict[str, bytes]
) -> tuple[dict[str, np.ndarray], _Totals]:
    """Check each member against its mark, one at a time; its summaries and the totals."""
    D, M = len(names), len(names[0]) if names else 0
    latent = node["latent"]
    seeds = node["seed"][...]
    table = {key: np.full((D, M), np.nan) for key in SUMMARIES}
    table["finite"] = np.zeros((D, M), bool)
    totals = _Totals()
    for d in range(D):
        for m in range(M):
            name = names[d][m]
            try:
                mark = json.loads(raw[name])
            except ValueError:
                mark = False
            values = np.asarray(latent[d, m], dtype="<f4")
            problem = member_problem(name, mark, int(seeds[d, m]), values)
            if problem is not None:
                raise StoreError(
                    f"{name}: {problem} — run again with the same run_id to regenerate it"
                )
            stats = member_stats(values)
            for key in ("mean", "std", "min", "max", "finite"):
                table[key][d, m] = stats[key]
            seconds = (mark.get("record") or {}).get("seconds")
            if isinstance(seconds, int | float):
                table["seconds"][d, m] = seconds
            totals.add(name, values, stats)
    return table, totals
