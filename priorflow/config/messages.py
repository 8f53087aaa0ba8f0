"""Turning pydantic's validation errors into one line: ``<dotted.key>: <bad value> — <what is allowed>``.

A validator raises :class:`Problem` (``<bad value> — <what is allowed>``; the key is added here)
or a :class:`~priorflow.errors.ConfigError` that already names its key; anything else is
rendered from pydantic's error type.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from priorflow.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Problem(ValueError):
    """A bad value inside a validator: ``<bad value> — <what is allowed>`` (the key is added).

    ``subkey`` names a key below the validated one (for checks made on a whole section).
    """

    def __init__(self, message: str, subkey: str | None = None) -> None:
        super().__init__(message)
        self.subkey = subkey


def show(value: Any, limit: int = 60) -> str:
    """A short, one-line rendering of a bad value."""
    if isinstance(value, str):
        text = repr(value)
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dotted(loc: Iterable[Any]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += ("." if key else "") + str(part)
    return key or "config"


def _model_at(loc: Sequence[Any], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (``None`` when it is a free dict)."""
    model: type[BaseModel] = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def unknown_key(loc: Sequence[Any], root: type[BaseModel], via: str = "") -> str:
    key = dotted(loc)
    model = _model_at(loc, root)
    if model is None:
        return f"{via}{key}: unknown key"
    allowed = list(model.model_fields)
    where = dotted(loc[:-1]) if len(loc) > 1 else "the config"
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{via}{key}: unknown key{hint} — {where} takes {', '.join(allowed)}"


_TYPE_HELP = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "text (a string)",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "datetime_type": 'a date such as "2000-04-03 0h"',
}


def _one_line(error: dict[str, Any], root: type[BaseModel]) -> str:
    loc = error.get("loc", ())
    key = dotted(loc)
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    cause = ctx.get("error")
    if isinstance(cause, ConfigError):
        return str(cause)
    if isinstance(cause, Problem):
        if cause.subkey:
            key = dotted((*loc, cause.subkey))
        return f"{key}: {cause}"
    if kind == "missing":
        field = _model_at(loc, root)
        info = field.model_fields.get(str(loc[-1])) if field and loc else None
        what = f" ({info.description})" if info is not None and info.description else ""
        return f"{key}: missing — this key is required{what}"
    if kind == "extra_forbidden":
        return unknown_key(loc, root)
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        holder = _model_at(loc, root)
        info = holder.model_fields.get(str(loc[-1])) if holder and loc else None
        if info is not None and info.default is None and info.description:
            expected += f", or null ({info.description.split('; null = ')[-1]})"
        return f"{key}: {show(value)} — choose one of {expected}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}.get(
            kind, "<"
        )
        bound = next(iter(ctx.values()), "")
        return f"{key}: {show(value)} — must be {sign} {bound}"
    if kind in _TYPE_HELP:
        return f"{key}: {show(value)} — must be {_TYPE_HELP[kind]}"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{key}: {show(value)} — {message}"


def validate(model: type[M], data: dict[str, Any]) -> M:
    """``model.model_validate(data)``, its first problem raised as a one-line ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = error.errors()
        message = _one_line(errors[0], model)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise ConfigError(message) from None
