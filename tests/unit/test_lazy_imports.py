"""mesh loads neither OpenSSL's ssl nor hashlib's libcrypto (mesh/lazy_ssl.py,
mesh/digest.py), and that changes nothing a user can see: the digests are hashlib's,
``import ssl`` works, and asyncio speaks TLS once something uses it.

Each check runs in a fresh interpreter: what matters is what ``import mesh`` does first.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mesh import digest

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(code: str, timeout: float = 60.0) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_digests_are_hashlibs() -> None:
    for data in (b"", b"bench.inc", "n\u00e9ud\0key".encode(), os.urandom(1000)):
        assert digest.sha1(data).hexdigest() == hashlib.sha1(data).hexdigest()
        assert digest.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
        for size in (4, 8, 16, 64):
            assert (digest.blake2b(data, digest_size=size).digest()
                    == hashlib.blake2b(data, digest_size=size).digest())


# loaded only where used: a wrong name's hint, a named time zone, --autoreload, copied
# keys, a Decimal argument (7 MiB of RSS for a node and two children with OpenSSL's two);
# key files (zmq.auth: only with --keys) and signatures (mesh.canvas: mesh.periodic's
# add_periodic_task), round 14 (what a running node's children carry: test_e2e_pool)
NOT_AT_IMPORT = ("ssl", "_ssl", "hashlib", "_hashlib", "difflib", "zoneinfo", "sysconfig",
                 "shutil", "bz2", "lzma", "decimal", "zmq.auth", "mesh.canvas")


def test_import_mesh_loads_no_openssl_and_nothing_unused() -> None:
    out = run_fresh(f"""
        import sys
        import mesh, mesh.node.node, mesh.cli.meshnode, bench.tasks
        print(sorted(m for m in {NOT_AT_IMPORT!r} if m in sys.modules))
    """)
    assert out.strip() == "[]"


# never imported by a node (round 15): AsyncResult's module (the node uses mesh/slot.py's
# Slot, retry_meta, trim_retry) and the workflows' results
NOT_IN_NODE = ("mesh.workflow.results", "mesh.result")


def test_a_node_imports_no_asyncresult() -> None:
    out = run_fresh(f"""
        import sys
        import mesh, mesh.node.node, mesh.cli.meshnode, bench.tasks
        from mesh.node.node import Node
        from mesh.config import Config
        node = Node(bench.tasks.app, Config(bind="tcp://127.0.0.1:1", data_dir="/nonexistent"))
        print(sorted(m for m in {NOT_IN_NODE!r} if m in sys.modules))
    """)
    assert out.splitlines() == ["[]"]


def test_ssl_still_imports_and_asyncio_gets_it() -> None:
    out = run_fresh("""
        import mesh, asyncio.sslproto, asyncio.base_events, asyncio.selector_events
        import ssl
        assert ssl.SSLContext is ssl.__dict__["SSLContext"], ssl    # the real module
        assert asyncio.sslproto.ssl.MemoryBIO is ssl.MemoryBIO       # through the stand-in
        assert asyncio.base_events.ssl is ssl and asyncio.selector_events.ssl is ssl
        assert asyncio.sslproto.SSLAgainErrors == (ssl.SSLWantReadError, ssl.SSLSyscallError)
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a cert")
def test_asyncio_tls_round_trip_after_import_mesh(tmp_path: Path) -> None:
    """A TLS server and client on asyncio, in a process where mesh imported asyncio and
    nothing imported ssl before the connection: the client passes its own SSLContext,
    the path where asyncio would first meet ssl inside a live connection."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    out = run_fresh(f"""
        import sys
        import mesh, asyncio
        assert "ssl" not in sys.modules

        async def main():
            import ssl
            server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_ctx.load_cert_chain({str(cert)!r}, {str(key)!r})
            client_ctx = ssl.create_default_context(cafile={str(cert)!r})

            async def echo(reader, writer):
                writer.write((await reader.readline()).upper())
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                           server_hostname="localhost")
            writer.write(b"hello over tls " * 3000 + b"\\n")   # 45 kB: several TLS records each way
            await writer.drain()
            line = await reader.readline()
            version = writer.get_extra_info("ssl_object").version()
            writer.close()
            server.close()
            await server.wait_closed()
            return line, version

        line, version = asyncio.run(asyncio.wait_for(main(), 30))
        assert line == b"HELLO OVER TLS " * 3000 + b"\\n", line[:80]
        print(version)
    """)
    assert out.strip().startswith("TLS")


# what meshctl's requests need none of: mesh's public names are imported on first use
# (mesh/__init__.py), the client's I/O thread too (mesh/client/__init__.py), and the
# node's ZAP guard lives apart (mesh/security/guard.py): a third of meshctl's start
NOT_FOR_MESHCTL = ("mesh.app", "mesh.canvas", "mesh.task", "mesh.result", "mesh.node.commands",
                   "mesh.client.io", "mesh.periodic", "zmq.auth.thread")


def test_meshctl_loads_no_app_and_every_public_name_is_still_there() -> None:
    out = run_fresh(f"""
        import sys
        import mesh.cli.meshctl, mesh.client.control
        print(sorted(m for m in {NOT_FOR_MESHCTL!r} if m in sys.modules))
        import mesh
        from mesh import Mesh, chain, shared_task, signals, states
        from mesh.app import Mesh as AppMesh
        from mesh.canvas import chain as canvas_chain
        assert Mesh is AppMesh and mesh.Mesh is AppMesh and chain is canvas_chain
        assert all(getattr(mesh, name) is not None for name in mesh.__all__)
        assert set(mesh.__all__) <= set(dir(mesh))
        try:
            mesh.no_such_name
        except AttributeError as e:
            print(e)
        from mesh.client import Client
        from mesh.client.io import Client as IoClient
        assert Client is IoClient
    """)
    assert out.splitlines() == ["[]", "module 'mesh' has no attribute 'no_such_name'"]


@pytest.mark.parametrize("first", ["mesh.workflow.results", "mesh.result", "mesh.app"])
def test_results_and_group_results_import_in_any_order(first: str) -> None:
    """mesh.app no longer loads mesh.result, so a process may import GroupResult's
    module first (``app.GroupResult(...)``): no import cycle either way."""
    out = run_fresh(f"""
        import {first}
        from mesh.result import AsyncResult, GroupResult, ResultSet
        from mesh.result import *
        import mesh, mesh.workflow.results as r
        assert GroupResult is r.GroupResult is mesh.GroupResult and ResultSet is r.ResultSet
        print(AsyncResult.__name__)
    """)
    assert out.strip() == "AsyncResult"
