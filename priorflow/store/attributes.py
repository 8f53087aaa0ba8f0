"""The store's attributes as plain, flat key-value pairs that any zarr or netCDF tool reads.

priorflow describes a run with nested records (the sampling spec under the run config's key
names, the model card, the package versions, ``priorflow_schema``). In the store they are
written flat, one attribute per leaf under its dotted key (``diffusion.num_steps = 64``,
``card.blanket_size = 8``, ``package_versions.torch = "2.4.1"``, the same dotted keys the
resume check names), so a generic tool shows every value as a plain number, string or list,
and ``xarray`` can write a group to netCDF as it is.

:func:`flat_attrs` and :func:`nested_attrs` are exact inverses on what priorflow writes:

- a mapping with keys is flattened (its keys joined by ``.``); an empty mapping stays ``{}``;
- a mapping with a key that holds a dot, or an empty key (free-form card metadata may), is kept
  whole under its key (a JSON object: zarr reads it, netCDF does not, see :func:`netcdf_attrs`);
- ``None`` stays ``null``; lists stay lists.

Attributes written by an earlier priorflow (nested, schema 2) read back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEPARATOR = "."


def _flattenable(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) and k and SEPARATOR not in k for k in value)
    )


def flat_attrs(attrs: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    r"""``{"a": {"b": 1}, "c": None}`` -> ``{"a.b": 1, "c": None}`` (see the module docstring).

    Arguments:
        attrs: JSON-able attributes (:func:`~priorflow.store.layout.to_json`).
        prefix: the dotted key ``attrs`` sits under (``"card."``).
    """
    flat: dict[str, Any] = {}
    for key, value in attrs.items():
        dotted = f"{prefix}{key}"
        if _flattenable(value):
            flat.update(flat_attrs(value, dotted + SEPARATOR))
        else:
            flat[dotted] = value
    return flat


def nested_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flat_attrs`: ``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in attrs.items():
        *parents, leaf = str(key).split(SEPARATOR)
        node = nested
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # "a" and "a.b" both present: keep the key whole
                node = None
                break
            node = child
        if node is None:
            nested[str(key)] = value
        else:
            node[leaf] = value
    return nested


def netcdf_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Flat attributes as netCDF holds them: strings, numbers and lists of one kind of them.

    Nested values are flattened first. ``True``/``False`` become ``"true"``/``"false"``; a
    ``"nan"``/``"inf"`` float written as text (JSON has no NaN) becomes the float; what netCDF
    cannot hold is left out: ``None`` (an absent attribute is an unset one), empty mappings and
    lists, lists that mix kinds, and mappings kept whole.
    """
    out: dict[str, Any] = {}
    for key, value in flat_attrs(attrs).items():
        converted = _netcdf_value(value)
        if converted is not None:
            out[key] = converted
    return out


def _netcdf_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            floats = any(isinstance(v, float) for v in value)
            return [float(v) if floats else v for v in value]
    return None
