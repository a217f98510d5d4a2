"""Configuration sources for ``app.conf``: ``config_from_object`` (a module, an
object, a dict, or their name; Celery's namespace rule) and ``config_from_envvar``.
What they read is checked by mesh/conf.py like anything else set."""
from __future__ import annotations

import importlib
import os
import types
from collections.abc import Callable, Mapping
from typing import Any

from mesh.conf import DEFAULTS, not_taken
from mesh.conf_names import FIXED
from mesh.einfo import failure_text
from mesh.exceptions import ConfigError


def import_object(spec: str) -> Any:
    """``"module"``, ``"module:attr"`` or ``"module.attr"`` (tried as a module first)."""
    module_name, colon, attr = spec.partition(":")
    try:
        if colon:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            return obj
        try:
            return importlib.import_module(spec)
        except ModuleNotFoundError as e:
            parent, dot, name = spec.rpartition(".")
            if not dot or e.name != spec:
                raise
            return getattr(importlib.import_module(parent), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import {spec!r}: {failure_text(e)}") from None


_NOT_SETTINGS = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType,
                 types.MethodType)


def _not_a_setting(name: str, value: Any) -> bool:
    """A config object's own imports and methods (``from datetime import timedelta``,
    Django's ``settings.is_overridden``), unless the name is a setting's."""
    if not isinstance(value, _NOT_SETTINGS) and not callable(value):
        return False
    return name not in DEFAULTS and name not in FIXED and not_taken(name) is None


def read_object(obj: Any, namespace: str | None = None) -> dict[str, Any]:
    """The settings an object (a module, a class, Django's settings) or a dict holds.

    With a namespace (Celery's rule), only names starting with ``NAMESPACE_`` are read,
    the prefix dropped and the rest lower-cased: ``MESH_TASK_ALWAYS_EAGER`` is
    ``task_always_eager``. Without one, every public lower-case name is read, except
    modules, classes, functions and methods that are not settings (a config module's
    own imports)."""
    if isinstance(obj, str):
        obj = import_object(obj)
    if isinstance(obj, Mapping):
        items = list(obj.items())
    else:
        items = [(k, getattr(obj, k)) for k in dir(obj) if not k.startswith("_")]
    out: dict[str, Any] = {}
    prefix = namespace.rstrip("_").upper() + "_" if namespace else ""
    for key, value in items:
        if not isinstance(key, str):
            continue
        if prefix:
            if not key.upper().startswith(prefix) or len(key) == len(prefix):
                continue
            out[key[len(prefix):].lower()] = value
        elif key == key.lower() and (isinstance(obj, Mapping) or not _not_a_setting(key, value)):
            out[key] = value
    return out


def read_envvar(variable: str, silent: bool = False) -> Callable[[], Mapping[str, Any]] | None:
    """A loader for the module named by an environment variable (Celery's
    ``config_from_envvar``); None when it is unset and ``silent``."""
    spec = os.environ.get(variable)
    if not spec:
        if silent:
            return None
        raise ConfigError(f"environment variable {variable} is not set: it should name the "
                          "configuration module (e.g. proj.settings)")
    return lambda: read_object(spec)
