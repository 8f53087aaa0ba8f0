"""Which backbones a model card may build: registered factories and ``nn.Module`` classes.

A card's ``backbone.target`` is called to build the network, so it decides what code runs when a
model directory is loaded. Only two kinds of target are called:

- a factory registered under the ``priorflow.backbones`` entry-point group, named by its entry
  point's name (``reference``, ``exact``) or by its ``"module:callable"`` value; a package
  registers its own in its ``pyproject.toml``::

      [project.entry-points."priorflow.backbones"]
      my_unet = "my_package.models:build_unet"

- a subclass of ``torch.nn.Module``, named ``"module:Class"``.

Anything else (``"os:system"``, a function nobody registered, a constant) is refused with one
line before it is called. Naming a target imports its module, as installing the package that
holds it already trusts it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib import metadata
from typing import Any

from torch import nn

from priorflow.errors import ModelError, PriorflowError
from priorflow.models.card import CARD_NAME, ModelCard, one_line

BACKBONE_GROUP = "priorflow.backbones"

#: Card targets of earlier releases, and where those callables live now.
LEGACY_TARGETS = {
    "priorflow.reference:ReferenceBackbone": "priorflow.models.reference:ReferenceBackbone",
    "priorflow.synthetic:exact_backbone": "priorflow.models.exact:exact_backbone",
}


def registered_backbones() -> dict[str, str]:
    """``{name: "module:callable"}`` of the factories registered under ``priorflow.backbones``."""
    return {entry.name: entry.value for entry in metadata.entry_points(group=BACKBONE_GROUP)}


def resolve_target(target: str) -> Callable[..., nn.Module]:
    """The callable a card's ``backbone.target`` names, if it may be called (module docstring).

    Raises:
        ModelError: one line, before anything is called, for a malformed or unknown target, a
            module that does not import, or a callable that is neither registered nor an
            ``nn.Module`` subclass.
    """
    registered = registered_backbones()
    path = registered.get(target, LEGACY_TARGETS.get(target, target))
    obj = _import(target, path)
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        return obj
    if path in registered.values() and callable(obj):
        return obj
    names = ", ".join(sorted(registered)) or "none"
    raise ModelError(
        f"backbone.target: {target!r} is neither an nn.Module subclass nor a backbone registered"
        f" under the {BACKBONE_GROUP} entry points (registered: {names}); it is not called —"
        " name a class, or register the factory (docs/models.md)"
    )


def _import(target: str, path: str) -> Any:
    """The object ``"module:attribute"`` names (the attribute may be dotted)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute or ":" in attribute:
        names = ", ".join(sorted(registered_backbones())) or "none"
        raise ModelError(
            f"backbone.target: {target!r} is not a registered backbone (registered: {names})"
            " nor 'module:Class'; install the package that registers it, or name one, e.g."
            " 'reference' or 'priorflow.models.reference:ReferenceBackbone'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise ModelError(
                f"backbone.target: module {module_name!r} of {target!r} is not found; install it"
                " or fix the module path"
            ) from None
        raise ModelError(
            f"backbone.target: importing {module_name!r} failed: {one_line(error)}; install"
            " what it needs"
        ) from None
    except Exception as error:
        raise ModelError(
            f"backbone.target: importing {module_name!r} failed: {type(error).__name__}:"
            f" {one_line(error)}"
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(
                f"backbone.target: module {module_name!r} has no attribute {attribute!r};"
                " fix the name after ':'"
            ) from None
    return obj


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` names a keyword parameter ``name`` (``**kwargs`` does not count)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind in (
        parameter.POSITIONAL_OR_KEYWORD,
        parameter.KEYWORD_ONLY,
    )


def build_backbone(card: ModelCard) -> nn.Module:
    """Build the (untrained) backbone named by ``card.backbone``.

    ``card.state_shape`` is passed as the keyword ``state_shape`` when the callable names that
    parameter and the card's ``backbone.kwargs`` do not set it (if they do, the two must agree). The
    backbone validates the shape at construction; a rejection is a one-line ``ModelError``.
    """
    target = card.backbone.target
    factory = resolve_target(target)
    kwargs = dict(card.backbone.kwargs)
    shape = tuple(card.state_shape)
    if "state_shape" in kwargs:
        if tuple(kwargs["state_shape"]) != shape:
            raise ModelError(
                f"backbone.kwargs.state_shape: {tuple(kwargs['state_shape'])} differs from the"
                f" card's state_shape {shape}; remove it from kwargs or make them equal"
            )
        kwargs["state_shape"] = shape
    elif _accepts(factory, "state_shape"):
        kwargs["state_shape"] = shape
    try:
        backbone = factory(**kwargs)
    except TypeError as error:
        raise ModelError(
            f"backbone.kwargs: {target} does not accept {sorted(card.backbone.kwargs)}:"
            f" {one_line(error)}; fix the kwargs in {CARD_NAME}"
        ) from None
    except (ValueError, PriorflowError) as error:
        message = one_line(error)
        if message.startswith("backbone.kwargs."):  # the backbone named the setting at fault
            raise ModelError(f"{message} (backbone {target})") from None
        raise ModelError(
            f"state_shape: backbone {target} rejects state_shape {shape} with kwargs"
            f" {card.backbone.kwargs}: {message}"
        ) from None
    if not isinstance(backbone, nn.Module):
        raise ModelError(
            f"backbone.target: {target} returned {type(backbone).__name__}, not a torch"
            " nn.Module; name a callable that builds the network"
        )
    return backbone
