"""asyncio without ``ssl`` until something uses TLS.

asyncio imports ``ssl`` at its own import, for the day a connection uses TLS. ``ssl``
loads ``_ssl``, libssl and libcrypto and initialises OpenSSL: 2.7 MiB more RSS for a
node and its two children, and 4.5 MiB with hashlib's copy of libcrypto (mesh.digest),
for TLS that mesh itself never uses (ZeroMQ's CURVE does its own crypto). So when mesh
is the first to import asyncio, asyncio gets a stand-in for ``ssl`` that imports the
real module on first use of any of its names and then puts it in asyncio's place:

- every TLS path of asyncio uses a name of ``ssl`` before it needs the module
  (``SSLProtocol()`` makes its ``ssl.MemoryBIO()``s, ``start_tls`` and the ``ssl=``
  arguments go through ``SSLProtocol``, the socket checks through ``ssl.SSLSocket``),
  so TLS in asyncio works as before, once ``ssl`` has loaded;
- ``ssl`` itself stays importable: the stand-in is in ``sys.modules`` only while
  asyncio imports, so ``import ssl`` anywhere (a task, aiohttp) loads the real one;
- the two names asyncio.sslproto reads at import (``SSLWantReadError``,
  ``SSLSyscallError``, for a tuple it only uses inside a live TLS connection) are
  placeholders until the real module loads, then asyncio's tuple is the real one.

Nothing is done when asyncio or ssl is already imported, when this Python has no
``_ssl`` (asyncio then sees no ssl, as it would anyway), or on a Python newer than
those checked (``VERIFIED_BELOW``).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any


class _NotYet(Exception):
    """asyncio.sslproto's SSLAgainErrors until ssl has loaded: never raised."""


_lock = threading.Lock()
# asyncio's module-level use of ssl (the names above) checked on 3.11, 3.12 and 3.13
# (a TLS round trip after the stand-in: tests/unit/test_lazy_imports.py); a later
# Python gets no stand-in until someone checks it
VERIFIED_BELOW = (3, 14)


class _LazySSL(types.ModuleType):
    """The stand-in: any name it does not hold loads the real ``ssl``."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):       # introspection (copy, pickle, inspect): no load
            raise AttributeError(name)
        return getattr(load(), name)


_proxy = _LazySSL("ssl", "Stand-in for ssl in asyncio until TLS is used: see mesh.lazy_ssl.")
_users: list[types.ModuleType] = []     # the modules whose global ``ssl`` is the stand-in


def load() -> types.ModuleType:
    """The real ``ssl``, imported if need be and put in the stand-in's place."""
    with _lock:
        real = sys.modules.get("ssl")
        if real is None or real is _proxy:
            if real is _proxy:          # asyncio is still importing: leave it none
                del sys.modules["ssl"]
            real = importlib.import_module("ssl")
        for mod in _users:
            if vars(mod).get("ssl") is _proxy:
                mod.ssl = real  # type: ignore[attr-defined]
        _fix_sslproto(real)
        return real


def _fix_sslproto(real: types.ModuleType) -> None:
    proto = sys.modules.get("asyncio.sslproto")
    if proto is not None and vars(proto).get("SSLAgainErrors") == (_NotYet, _NotYet):
        proto.SSLAgainErrors = (real.SSLWantReadError, real.SSLSyscallError)  # type: ignore[attr-defined]


def import_asyncio() -> bool:
    """Import asyncio with the stand-in for ``ssl``; True if the stand-in is in use."""
    if "asyncio" in sys.modules or "ssl" in sys.modules or importlib.util.find_spec("_ssl") is None:
        return False
    if sys.version_info >= VERIFIED_BELOW:     # asyncio's use of ssl not checked there
        return False
    _proxy.SSLWantReadError = _proxy.SSLSyscallError = _NotYet  # type: ignore[attr-defined]
    sys.modules["ssl"] = _proxy
    try:
        import asyncio  # noqa: F401
    finally:
        if sys.modules.get("ssl") is _proxy:
            del sys.modules["ssl"]
        del _proxy.SSLWantReadError, _proxy.SSLSyscallError
    _users.extend(m for name, m in list(sys.modules.items())
                  if name.startswith("asyncio") and isinstance(m, types.ModuleType)
                  and vars(m).get("ssl") is _proxy)
    real = sys.modules.get("ssl")
    if real is not None:                # something loaded it meanwhile: no stand-in
        load()
        return False
    return bool(_users)
