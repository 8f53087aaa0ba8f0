"""Artifact keys: Prefect allows lowercase letters, digits and dashes only."""

from __future__ import annotations

import re

_NOT_ALLOWED = re.compile(r"[^a-z0-9-]+")


def artifact_key(*parts: object) -> str:
    """``artifact_key("priorflow", "Run_1", "72h", "members")`` -> ``priorflow-run-1-72h-members``.

    Every run of characters other than ``a-z0-9-`` becomes one dash; dashes do not repeat and
    the key neither starts nor ends with one.
    """
    text = "-".join(str(part) for part in parts).lower()
    text = _NOT_ALLOWED.sub("-", text)
    return re.sub("-{2,}", "-", text).strip("-")
