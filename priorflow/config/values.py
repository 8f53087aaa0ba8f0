"""Values written as text in a config: SLURM wall times, memory sizes, size lists, run ids."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from priorflow.config.messages import Problem, show

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RAM = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGTP]i?B?|B)\s*$", re.IGNORECASE)
_TIME_FORMATS = (
    # SLURM --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
    re.compile(r"^(?P<m>\d+)$"),
    re.compile(r"^(?P<m>\d+):(?P<s>\d{1,2})$"),
    re.compile(r"^(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2})$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2})$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2})$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})$"),
)
_TIME_HELP = 'a quoted SLURM time: "D-HH:MM:SS", "HH:MM:SS", "MM:SS" or minutes, e.g. "6:00:00"'


def _sexagesimal(number: int) -> str:
    """How YAML 1.1 would have read ``number`` if it was written unquoted as ``a:b[:c]``."""
    digits = []
    while number >= 60:
        number, rest = divmod(number, 60)
        digits.append(f"{rest:02d}")
    digits.append(str(number))
    return ":".join(reversed(digits))


def slurm_time_seconds(text: str) -> int:
    """Seconds in a SLURM time string (``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``D-HH[:MM]``, minutes).

    Raises :class:`ValueError` with ``<bad value> — <what is allowed>`` when it is not one.
    """
    for pattern in _TIME_FORMATS:
        match = pattern.match(text.strip())
        if match is None:
            continue
        parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        if parts.get("s", 0) >= 60 or ("h" in parts and "m" in parts and parts["m"] >= 60):
            break
        if "d" in parts and parts["h"] >= 24:
            break
        seconds = (
            parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60
        ) + parts.get("s", 0)
        if seconds <= 0:
            raise Problem(f"{show(text)} — a time must be longer than zero")
        return seconds
    raise Problem(f"{show(text)} — not a time; use {_TIME_HELP}")


def duration_words(seconds: float) -> str:
    """A duration in words: ``360`` -> ``6 min``, ``21600`` -> ``6 h``, ``5400`` -> ``1 h 30 min``,
    ``90061`` -> ``1 d 1 h 1 min 1 s`` (whole seconds; under 1 s: ``0.25 s``)."""
    if seconds < 1:
        return f"{seconds:.2g} s"
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts)


def time_words(text: str) -> str:
    """A SLURM time with its duration as SLURM reads it: ``6:00 = 6 min``, ``6:00:00 = 6 h``."""
    return f"{text} = {duration_words(slurm_time_seconds(text))}"


def _readings(written: str) -> str:
    """What the quoted forms of an unquoted ``a:b[:c]`` mean to SLURM: ``"6:00"`` is MM:SS (6
    minutes) while ``"6:00:00"`` is HH:MM:SS (6 hours), so a two-part time gets both readings."""
    readings = [written] if written.count(":") == 2 else [written, f"{written}:00"]
    return ", ".join(
        f'"{text}" as {duration_words(slurm_time_seconds(text))}' for text in readings
    )


def check_time(value: Any) -> str:
    if isinstance(value, bool):
        raise Problem(f"{show(value)} — {_TIME_HELP}")
    if isinstance(value, int):
        written = _sexagesimal(value)
        if 2 <= len(written.split(":")) <= 3 and int(written.split(":")[0]) > 0:
            raise Problem(
                f"got the number {value}; YAML reads an unquoted {written} as a base-60 number"
                f" — quote the time: SLURM reads {_readings(written)}"
            )
        raise Problem(
            f"got the number {value} — a time must be a quoted string (YAML reads an unquoted"
            f' 6:00 as 360): write time: "{value}" for {value} minutes, or "HH:MM:SS"'
        )
    if not isinstance(value, str):
        raise Problem(f"{show(value)} — {_TIME_HELP}")
    slurm_time_seconds(value)
    return value.strip()


def check_ram(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise Problem(f'got the number {value} — give a unit, e.g. ram: "{value}GB"')
    if not isinstance(value, str) or not _RAM.match(value):
        raise Problem(f'{show(value)} — a memory size with a unit, e.g. "64GB", "500MB"')
    return value.strip()


def format_sizes(sizes: Sequence[int]) -> str:
    """``[24, 25, 26, 48]`` -> ``"24-26,48"`` (what :func:`parse_trajectory_sizes` reads)."""
    parts: list[str] = []
    values = sorted(set(sizes))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)
