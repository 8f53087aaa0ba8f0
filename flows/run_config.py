"""Loading a run config as the flows and the command line do: once, its Prefect blocks resolved.

:func:`load_run_config` reads a run config (and ``--set`` items and a run id) with
:func:`priorflow.config.load_config`, resolving the ``blocks:`` names it holds on the Prefect
server. :func:`resolve_block` is the ``resolve_block`` argument of the loader:
``resolve_block("model", "reference")`` loads the ``prior-model`` block ``reference`` and returns
its config values (``{"model_path": ..., "model_target": ...}``). A name may carry its type's
slug (``prior-model/reference``).

The server: ``PREFECT_API_URL`` (environment or Prefect profile; it must answer), else a server
``priorflow run --keep-server`` kept (``.prefect/server.json``). With neither, a config naming
blocks is a one-line ConfigError, so ``priorflow plan`` works offline for configs without blocks.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from flows.server import (
    api_healthy,
    configured_api_url,
    prefect_home,
    read_record,
    use_api_url,
)
from priorflow.config import RunConfig, load_config
from priorflow.errors import ConfigError


def config_items(overrides: Iterable[str] | None, run_id: str | None) -> list[str]:
    """``--set`` items plus ``run_id`` (quoted, so that ``--run-id 2024`` stays a string)."""
    items = list(overrides or ())
    if run_id:
        items.append(f"run_id={json.dumps(str(run_id))}")
    return items


def load_run_config(
    config_path: str | os.PathLike[str],
    overrides: Iterable[str] | None = None,
    run_id: str | None = None,
) -> RunConfig:
    """The run config at ``config_path`` with ``--set`` items and ``run_id`` applied, the Prefect
    blocks it names read from the server (:func:`resolve_block`). One line on any problem."""
    return load_config(config_path, config_items(overrides, run_id), resolve_block=resolve_block)


def blocks_api_url(kind: str = "model", name: str = "?") -> str:
    """The Prefect API that holds the blocks; ConfigError (one line) when none answers."""
    url = configured_api_url()
    if url:
        if not api_healthy(url, timeout=5.0):
            raise ConfigError(
                f"blocks.{kind}: {name!r} is a Prefect block, but PREFECT_API_URL {url!r} does"
                " not answer — start that server, or write the paths/settings instead"
            )
        return url
    record = read_record(prefect_home())
    if record is not None:
        return record["api_url"]
    raise ConfigError(
        f"blocks.{kind}: {name!r} is a Prefect block, and no Prefect server is known — export"
        " PREFECT_API_URL=http://HOST:PORT/api (or keep one with priorflow run --keep-server),"
        " or write the paths/settings instead"
    )


@contextlib.contextmanager
def _api(url: str) -> Iterator[None]:
    if configured_api_url() == url:
        yield
    else:
        with use_api_url(url):
            yield


def load_block(kind: str, name: str) -> Any:
    """The saved block ``name`` of the kind ``model`` / ``archive`` / ``cluster``."""
    from blocks.models import BLOCK_CLASSES  # Prefect is imported only when a config names blocks

    if kind not in BLOCK_CLASSES:
        raise ConfigError(f"blocks.{kind}: unknown kind — blocks takes {', '.join(BLOCK_CLASSES)}")
    cls = BLOCK_CLASSES[kind]
    slug = cls.get_block_type_slug()
    prefix, _, short = name.rpartition("/")
    if prefix and prefix != slug:
        raise ConfigError(
            f"blocks.{kind}: {name!r} is a {prefix} block — blocks.{kind} takes a {slug} block"
            f" (write {slug}/NAME or just NAME)"
        )
    url = blocks_api_url(kind, name)
    with _api(url):
        try:
            return cls.load(short)
        except Exception as error:
            text = " ".join(str(error).split())
            if "Unable to find" in text or "not found" in text.lower():
                raise ConfigError(
                    f"blocks.{kind}: no {slug} block named {short!r} on {url} — create it in"
                    f" the UI (Blocks) or with {cls.__name__}(...).save({short!r}); list them"
                    " with: prefect block ls"
                ) from None
            raise ConfigError(
                f"blocks.{kind}: {name!r} could not be loaded from {url}: {text[:200]}"
            ) from None


def resolve_block(kind: str, name: str) -> dict[str, Any]:
    """Config values of the block ``name`` (see the module docstring)."""
    return load_block(kind, name).config_values()
