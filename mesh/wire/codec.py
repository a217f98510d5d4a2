"""Encoding of task arguments and results: msgpack plus a few documented extensions.

Arguments and results travel as opaque ``bytes`` inside wire messages, so a node
routes a task without decoding what it carries; the child that runs it decodes.
Never pickle: what comes off the network is only ever msgpack.

Extension types (the numbers are protocol; see docs/protocol.md):

====  ==========================  ============================================
code  Python type                 payload
====  ==========================  ============================================
1     datetime.datetime           ISO 8601 text (UTF-8), offset kept when aware
2     datetime.date               ISO 8601 text
3     datetime.timedelta          msgpack [days, seconds, microseconds]
4     decimal.Decimal             text
5     uuid.UUID                   16 raw bytes
====  ==========================  ============================================

Tuples become arrays (they come back as lists), as with JSON in Celery.
"""
from __future__ import annotations

import datetime as _dt
import sys
from typing import Any

import msgpack

from mesh.exceptions import DecodeError, EncodeError

EXT_DATETIME = 1
EXT_DATE = 2
EXT_TIMEDELTA = 3
EXT_DECIMAL = 4
EXT_UUID = 5


def _default(obj: Any) -> Any:
    # datetime before date: datetime is a subclass of date
    if isinstance(obj, _dt.datetime):
        return msgpack.ExtType(EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, _dt.date):
        return msgpack.ExtType(EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, _dt.timedelta):
        return msgpack.ExtType(EXT_TIMEDELTA, msgpack.packb([obj.days, obj.seconds, obj.microseconds]))
    # decimal and uuid are imported by whoever made the object: not here for nothing
    # (0.3 MB of heap every child would inherit)
    decimal, uuid = sys.modules.get("decimal"), sys.modules.get("uuid")
    if decimal is not None and isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(EXT_DECIMAL, str(obj).encode())
    if uuid is not None and isinstance(obj, uuid.UUID):
        return msgpack.ExtType(EXT_UUID, obj.bytes)
    if isinstance(obj, int):     # msgpack calls default() for ints it cannot hold
        raise EncodeError(f"integer {obj} is out of msgpack's range (-2**63 .. 2**64-1): "
                          "send it as a string or Decimal")
    if isinstance(obj, (set, frozenset)):
        raise EncodeError(f"cannot encode a {type(obj).__name__}: use a list")
    raise EncodeError(f"cannot encode {type(obj).__module__}.{type(obj).__qualname__}: "
                      "task arguments and results must be msgpack types "
                      "(None, bool, int, float, str, bytes, list, tuple, dict) "
                      "or datetime, date, timedelta, Decimal, UUID")


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        if code == EXT_DATETIME:
            return _dt.datetime.fromisoformat(data.decode())
        if code == EXT_DATE:
            return _dt.date.fromisoformat(data.decode())
        if code == EXT_TIMEDELTA:
            days, seconds, micro = msgpack.unpackb(data)
            return _dt.timedelta(days=days, seconds=seconds, microseconds=micro)
        if code == EXT_DECIMAL:
            import decimal
            return decimal.Decimal(data.decode())
        if code == EXT_UUID:
            import uuid
            return uuid.UUID(bytes=data)
    except Exception as e:
        raise DecodeError(f"bad payload for extension type {code}: {e}") from e
    raise DecodeError(f"unknown msgpack extension type {code}")


_KEY_TYPES = (str, int, float, bool, bytes, type(None))
_CONTAINERS = frozenset({dict, list, tuple})
MAX_DEPTH = 500   # msgpack's packer refuses deeper nesting too


def _check_keys(value: Any) -> None:
    """Map keys must decode as hashable values: no lists, tuples or maps as keys."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EncodeError(f"value is nested deeper than {MAX_DEPTH} levels "
                              "(or refers to itself)")
        if type(v) is dict:
            for k, item in v.items():
                if not isinstance(k, _KEY_TYPES):
                    raise EncodeError(f"map key {k!r} ({type(k).__name__}) cannot be sent: "
                                      "keys must be str, int, float, bool, bytes or None")
                if type(item) in _CONTAINERS:
                    stack.append((item, depth + 1))
        else:
            for x in v:
                if type(x) in _CONTAINERS:
                    stack.append((x, depth + 1))


def dumps(value: Any) -> bytes:
    """Encode a value (task arguments, a result) to bytes; EncodeError if impossible."""
    if type(value) in _CONTAINERS:
        _check_keys(value)
    try:
        data: bytes = msgpack.packb(value, default=_default, use_bin_type=True, datetime=False)
        return data
    except EncodeError:
        raise
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"cannot encode value: {e}") from e


def loads(data: bytes) -> Any:
    """Decode bytes made by :func:`dumps`; DecodeError on anything malformed."""
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False,
                               timestamp=3)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"malformed msgpack payload: {type(e).__name__}: {e}") from e


def dump_call(args: Any, kwargs: Any) -> bytes:
    """The payload of a task: ``[args, kwargs]``."""
    return dumps([list(args or ()), dict(kwargs or {})])


def load_call(data: bytes) -> tuple[list[Any], dict[str, Any]]:
    value = loads(data)
    if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], list)
            or not isinstance(value[1], dict) or not all(isinstance(k, str) for k in value[1])):
        raise DecodeError("task payload must be [args: array, kwargs: map with string keys]")
    return value[0], value[1]
