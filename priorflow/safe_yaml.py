"""The one way priorflow reads YAML it did not write (configs, cards, ``--set`` values).

``yaml.SafeLoader`` constructs no Python objects, but it still follows aliases: a 529-byte
"billion laughs" document of nested aliases expands to gigabytes when anything walks it. So
this loader refuses aliases (configs and cards have no use for them), refuses a key given twice
in one mapping, keeps unquoted dates as text (a bad one is then reported with its key), and
reads at most :data:`MAX_BYTES`.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: a run config or a card is a few kB


class YAMLRefused(ValueError):
    """A YAML document this loader does not read; the message says why and where."""


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YAMLRefused(
                f"an alias (*{event.anchor}) at line {event.start_mark.line + 1} — aliases are"
                " not read; write the value out"
            )
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise YAMLRefused(
                f"{key}: given twice (line {key_node.start_mark.line + 1}) — write each key once"
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str) -> Any:
    """Parse ``text`` (see the module docstring).

    Raises:
        YAMLRefused: too long, an alias, or a key given twice.
        yaml.YAMLError: not YAML (its ``problem`` and ``problem_mark`` say where).
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise YAMLRefused(f"longer than {MAX_BYTES // 1024} kB")
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass


def yaml_problem(error: Exception) -> str:
    """A one-line description of a ``load_yaml`` error, with its line and column if known."""
    if isinstance(error, YAMLRefused):
        return str(error)
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem}{where}"
