"""Name -> environment factory, so recipes and the CLI can say ``env: taxi``.

A user env needs no registration to be used from a recipe: ``env.name`` may
be an import path, ``"my_package.my_module:MyEnv"``.

Factories are import paths, loaded on first use, so an env whose optional
dependency is missing only fails (with an install hint) when it is asked for.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import types
import typing
from typing import Any, Callable

from pydantic import ConfigDict, TypeAdapter, ValidationError

from reflectrl.envs.base import TextEnv
from reflectrl.errors import UserError

_REGISTRY: dict[str, str | Callable[..., TextEnv]] = {
    "taxi": "reflectrl.envs.taxi:DangerousTaxi",
    "autoexplore": "reflectrl.envs.autoexplore.env:AutoExplore",
    "alfworld": "reflectrl.envs.alfworld:ALFWorld",
    "textworld": "reflectrl.envs.textworld:TextWorld",
    "babyai": "reflectrl.envs.babyai_text:BabyAIText",
}

_EXTRAS = {"alfworld": "alfworld", "textworld": "textworld", "babyai": "babyai"}


def register_env(name: str, factory: str | Callable[..., TextEnv]) -> None:
    """Add a user env: a class/callable, or a ``"module:attr"`` import path."""
    _REGISTRY[name] = factory


def list_envs() -> list[str]:
    return sorted(_REGISTRY)


def _resolve(name: str) -> Callable[..., TextEnv]:
    if name not in _REGISTRY and ":" in name:
        _REGISTRY[name] = name
    if name not in _REGISTRY:
        raise UserError(f"unknown env {name!r}; known envs: {', '.join(list_envs())}")
    factory = _REGISTRY[name]
    if callable(factory):
        return factory
    module_name, attr = factory.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        extra = _EXTRAS.get(name)
        hint = f" Install it with: pip install 'reflectrl[{extra}]'" if extra else ""
        raise UserError(f"env {name!r}: cannot import {module_name} ({error}).{hint}") from error
    if not hasattr(module, attr):
        raise UserError(f"env {name!r}: {module_name} has no attribute {attr!r}")
    return getattr(module, attr)


def make_env(name: str, **kwargs: Any) -> TextEnv:
    """Build a registered env, passing ``kwargs`` to its constructor; a bad argument (or a file it names that
    is missing or bad) is a UserError naming the env."""
    factory = _resolve(name)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as error:
            accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
            raise UserError(f"env {name!r}: {error} (its arguments: {', '.join(accepted) or 'none'})") from None
        check_argument_types(factory, kwargs, f"env {name!r}")
    try:
        return factory(**kwargs)
    except UserError:
        raise
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        raise UserError(f"env {name!r}: {error}") from error


def check_argument_types(factory: Callable[..., Any], kwargs: dict[str, Any], where: str) -> None:
    """Each argument against the type its constructor declares (strictly: no ``"5"`` for an int, no bool for
    a number), so that a recipe's wrong type is named here rather than failing as a TypeError deep inside the
    env. An argument whose declared type cannot be read or checked is passed on unchecked; values are never
    converted."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - a user env's annotations may name what is not importable here
        return
    for key, value in kwargs.items():
        if key not in hints:
            continue
        adapter = _adapter(hints[key])
        if adapter is None:
            continue
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError:
            shown = json.dumps(value, default=repr)
            raise UserError(f"{where}: argument {key!r} must be {_type_name(hints[key])}, got {shown[:80]}") from None


def _adapter(hint: Any) -> TypeAdapter | None:
    """A checker of ``hint``, built once per type (None: a type pydantic cannot check)."""
    try:
        return _cached_adapter(hint)
    except TypeError:  # an unhashable annotation: built each time
        return _build_adapter(hint)


def _build_adapter(hint: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # noqa: BLE001 - a type pydantic cannot check
        return None


_cached_adapter = functools.lru_cache(maxsize=None)(_build_adapter)


def _type_name(hint: Any) -> str:
    """``int``, ``str or None``, ``Sequence[Task]``: a declared type as a user reads it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if hint is type(None):
        return "None"
    name = getattr(origin or hint, "__name__", None) or str(hint).replace("typing.", "")
    return f"{name}[{', '.join(_type_name(arg) for arg in args)}]" if args and origin else name
