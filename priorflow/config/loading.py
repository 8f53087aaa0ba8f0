"""Loading a run config: a YAML file (or a mapping) plus ``--set`` overrides and Prefect block
values, validated into :class:`~priorflow.config.schema.RunConfig`.

Paths (``model_path``, ``archive``, ``output_dir``): a relative path written in the config file is
relative to the directory of that file, and so is the default ``output_dir``, ``runs`` (a config
at ``/x/appa.yaml`` writes to ``/x/runs/<run_id>`` from whatever directory it is run); a relative
path given with ``--set`` is relative to the current working directory (as the shell user typed
it). ``~`` is expanded; values with a URL scheme (``s3://...``) are left alone.

``output_dir`` may begin with the placeholder ``{model_path}``, the run's model directory
(resolved, after ``blocks.model``): ``output_dir: "{model_path}/prior"`` writes
``<model_path>/prior/<run_id>``, as Appa writes ``<lap>/prior/<id>``. Quote it in YAML (an
unquoted ``{`` starts a mapping).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from priorflow.config.messages import show, unknown_key, validate
from priorflow.config.schema import DEFAULT_OUTPUT_DIR, RunConfig
from priorflow.errors import ConfigError
from priorflow.safe_yaml import MAX_BYTES, YAMLRefused, load_yaml, yaml_problem

PATH_KEYS: tuple[str, ...] = ("model_path", "archive", "output_dir")
#: The placeholder ``output_dir`` may begin with: the run's model directory.
MODEL_PATH_PLACEHOLDER = "{model_path}"
BLOCK_KINDS: tuple[str, ...] = ("model", "archive", "cluster")

#: ``resolve_block(kind, name) -> config values``: ``kind`` is one of :data:`BLOCK_KINDS`; the
#: mapping holds config keys (``{"model_path": ..., "model_target": ...}``, ``{"archive": ...}``,
#: ``{"hardware": {...}}``). Raises ConfigError (one line) for an unknown name.
BlockResolver = Callable[[str, str], Mapping[str, Any]]


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config: {path} does not exist — give the path of a run config YAML")
    if not path.is_file():
        raise ConfigError(f"config: {path} is not a file — give the path of a run config YAML")
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(
            f"config: {path} is {path.stat().st_size} bytes — a run config is at most"
            f" {MAX_BYTES // 1024} kB"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config: {path} cannot be read — {error}") from None
    try:
        data = load_yaml(text)
    except YAMLRefused as error:
        raise ConfigError(f"config: {path}: {error}") from None
    except (yaml.YAMLError, ValueError) as error:
        raise ConfigError(f"config: {path} is not valid YAML — {yaml_problem(error)}") from None
    if data is None:
        raise ConfigError(f"config: {path} is empty — it must be a mapping (model_path: ...)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: {path} holds a {type(data).__name__} at the top level — it must be a mapping"
            " of keys (model_path: ..., trajectory_sizes: ...)"
        )
    return data


def parse_overrides(overrides: Iterable[str]) -> list[tuple[tuple[str, ...], Any]]:
    """Parse ``key.sub=value`` items into ``(("key", "sub"), value)``; values are YAML scalars.

    ``diffusion.num_steps=32`` -> 32, ``precision=null`` -> None, ``start_dates=["2000-01-01 0h"]``
    -> a list. Note that an unquoted ``6:00:00`` is a number in YAML too: write
    ``--set 'hardware.gen.time="6:00:00"'``. Unknown keys are errors.
    """
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = tuple(key.split("."))
        if not sep or not key or not all(parts):
            raise ConfigError(
                f"--set {item!r}: not key=value — write e.g. --set diffusion.num_steps=32"
            )
        try:
            value = load_yaml(text) if text.strip() else None
        except YAMLRefused as error:
            raise ConfigError(f"--set {key}: {error}") from None
        except (yaml.YAMLError, ValueError):
            raise ConfigError(
                f"--set {key}: {text!r} is not a YAML value — quote it, e.g. {key}='\"...\"'"
            ) from None
        model: type[BaseModel] | None = RunConfig
        for depth, part in enumerate(parts):
            if model is None:  # inside a free mapping (the sampler config)
                break
            field = model.model_fields.get(part)
            if field is None:
                raise ConfigError(unknown_key(parts[: depth + 1], RunConfig, via="--set "))
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
            elif depth < len(parts) - 1 and part != "config":
                raise ConfigError(
                    f"--set {key}: {'.'.join(parts[: depth + 1])} is a value, not a section"
                )
            else:
                model = None
        parsed.append((parts, value))
    return parsed


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value or "://" in value:
        return value
    if value.startswith(MODEL_PATH_PLACEHOLDER):  # filled in once model_path is known
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    return os.path.normpath(path)


def load_config(
    path: str | os.PathLike[str],
    overrides: Iterable[str] = (),
    resolve_block: BlockResolver | None = None,
) -> RunConfig:
    """Read a run config YAML, apply ``--set`` overrides, validate.

    Arguments:
        path: the YAML file (``yaml.safe_load`` semantics, but a key given twice is an error and
            unquoted dates stay text).
        overrides: ``"key.sub=value"`` items (:func:`parse_overrides`), applied in order.
        resolve_block: turns the ``blocks:`` names into config values (see the module
            docstring); needed only when the config names blocks.

    Relative paths in the file are resolved against the file's directory, and an unset
    ``output_dir`` is ``runs`` there too; relative paths given as overrides against the current
    working directory. ``output_dir: "{model_path}/prior"`` is under the model directory.

    Raises:
        ConfigError: one line ``<dotted.key>: <bad value> — <what is allowed>`` (missing file,
            bad YAML, top level not a mapping, unknown key, bad value).
    """
    path = Path(path).expanduser()
    changes = parse_overrides(overrides)
    data = _read_yaml(path)
    return _build(data, changes, path.resolve().parent, resolve_block)


def config_from_mapping(
    data: dict[str, Any],
    overrides: Iterable[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
    resolve_block: BlockResolver | None = None,
) -> RunConfig:
    """Validate a config given as a mapping (a deployment's or the Prefect UI's parameters).

    The same rules as :func:`load_config`; relative paths in ``data``, and the default
    ``output_dir`` ``runs``, are resolved against ``base_dir`` (default: the current working
    directory).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: {show(data)} — it must be a mapping of keys (model_path: ..., ...)"
        )
    changes = parse_overrides(overrides)
    return _build(
        copy.deepcopy(data), changes, Path(base_dir or Path.cwd()).resolve(), resolve_block
    )


def _merge_defaults(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` with ``own`` on top, mapping by mapping (``own``'s values win)."""
    merged = dict(defaults)
    for key, value in own.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge_defaults(merged[key], value)
        else:
            merged[key] = value
    return merged


#: The config keys each kind of block may set (a resolver returning others is a bug).
_BLOCK_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("model_path", "model_target"),
    "archive": ("archive",),
    "cluster": ("hardware",),
}


def _apply_blocks(data: dict[str, Any], resolve_block: BlockResolver | None) -> dict[str, Any]:
    """Replace the ``blocks:`` names of ``data`` by the values of the blocks (before validation).

    The names stay in ``data["blocks"]`` (validated as :class:`BlockNames`).
    """
    names = data.get("blocks")
    if not isinstance(names, dict) or not any(names.values()):
        return data
    unknown = [kind for kind in names if kind not in BLOCK_KINDS]
    if unknown:  # let validation name it (unknown key with a suggestion)
        return data
    given = {kind: names[kind] for kind in BLOCK_KINDS if names.get(kind)}  # in this order
    for kind, name in given.items():
        if not isinstance(name, str):
            raise ConfigError(f"blocks.{kind}: {show(name)} — the name of a saved block (text)")
    if resolve_block is None:
        shown = ", ".join(f"{kind}: {name}" for kind, name in given.items())
        raise ConfigError(
            f"blocks: the config names Prefect blocks ({shown}) — they are read from a Prefect"
            " server: set PREFECT_API_URL (or keep a server with priorflow run --keep-server),"
            " or write the paths and settings instead"
        )
    for own_key, kind in (("model_path", "model"), ("archive", "archive")):
        if kind in given and data.get(own_key):
            raise ConfigError(
                f"{own_key}: {show(data[own_key])} — blocks.{kind} ({given[kind]}) gives it"
                f" too; keep one of {own_key} and blocks.{kind}"
            )
    for kind, name in given.items():
        values = dict(resolve_block(kind, name))
        extra = sorted(set(values) - set(_BLOCK_KEYS[kind]))
        if extra:
            raise ConfigError(
                f"blocks.{kind}: {name!r} gave {', '.join(extra)} — a {kind} block sets only"
                f" {', '.join(_BLOCK_KEYS[kind])}"
            )
        for key in ("model_path", "archive"):
            if key in values:
                values[key] = _resolve_path(values[key], Path.cwd())
        data = _merge_defaults(values, data)
    return data


def _build(
    data: dict[str, Any],
    changes: list[tuple[tuple[str, ...], Any]],
    base: Path,
    resolve_block: BlockResolver | None = None,
) -> RunConfig:
    if "output_dir" in data:
        _check_output_dir(data["output_dir"])
    for key in PATH_KEYS:
        if key in data:
            data[key] = _resolve_path(data[key], base)
    for parts, value in changes:
        if parts == ("output_dir",):
            _check_output_dir(value)
        if len(parts) == 1 and parts[0] in PATH_KEYS:
            value = _resolve_path(value, Path.cwd())
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"--set {'.'.join(parts)}: {'.'.join(parts[: depth + 1])} is"
                    f" {show(child)} in the file, not a mapping"
                )
            node = child
        node[parts[-1]] = value
    data = _apply_blocks(data, resolve_block)
    data.setdefault("output_dir", os.path.normpath(base / DEFAULT_OUTPUT_DIR))
    data["output_dir"] = _fill_model_path(data["output_dir"], data.get("model_path"))
    return validate(RunConfig, data)


def _check_output_dir(output_dir: Any) -> None:
    """Refuse, in one line, a misplaced or unknown placeholder, or the unquoted YAML form."""
    example = f'output_dir: "{MODEL_PATH_PLACEHOLDER}/prior"'
    if isinstance(output_dir, dict) and list(output_dir) == ["model_path"]:
        raise ConfigError(
            f"output_dir: {show(output_dir)} — YAML read an unquoted {{model_path}} as a mapping;"
            f" quote it: {example}"
        )
    if not isinstance(output_dir, str) or ("{" not in output_dir and "}" not in output_dir):
        return
    rest = output_dir.removeprefix(MODEL_PATH_PLACEHOLDER)
    if rest == output_dir or "{" in rest or "}" in rest:
        raise ConfigError(
            f"output_dir: {show(output_dir)} — the one placeholder is {MODEL_PATH_PLACEHOLDER},"
            f" at the start, e.g. {example}"
        )


def _fill_model_path(output_dir: Any, model_path: Any) -> Any:
    """``{model_path}/prior`` -> ``<model_path>/prior`` (normalised); other values as they are."""
    if not isinstance(output_dir, str) or not output_dir.startswith(MODEL_PATH_PLACEHOLDER):
        return output_dir
    if not isinstance(model_path, str) or not model_path:
        return output_dir  # validation names the missing model_path
    rest = output_dir.removeprefix(MODEL_PATH_PLACEHOLDER)
    if "://" in model_path:
        return model_path.rstrip("/") + rest
    return os.path.normpath(Path(model_path) / rest.lstrip("/\\"))
