"""The digests mesh uses (blake2b, sha1, sha256), from CPython's own implementations.

``import hashlib`` loads ``_hashlib``, which links OpenSSL's libcrypto and initialises
it: 4.5 MiB more RSS for a node and its two children (1 MiB of heap that every child
inherits, the rest libcrypto's pages in the node), for a handful of hashes of short
strings (placement keys, ids, names). CPython's built-in modules compute the very same
digests (``hashlib.blake2b`` *is* ``_blake2.blake2b``), so the values never change;
where a build lacks them, hashlib is used. A user's task can still ``import hashlib``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:    # the private modules have no stubs: the public types describe them
    from hashlib import blake2b, sha1, sha256
else:
    try:
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - a CPython built without it
        from hashlib import blake2b
    try:
        from _sha1 import sha1
    except ImportError:  # pragma: no cover
        from hashlib import sha1
    try:
        from _sha2 import sha256  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # Python 3.11
        except ImportError:  # pragma: no cover
            from hashlib import sha256

__all__ = ["blake2b", "sha1", "sha256"]
