"""A copy of this checkout with the node's hot modules compiled by mypyc, to measure
against the pure Python tree side by side (docs/performance.md, "Round 12: mypyc").

Copies ``mesh/``, ``bench/``, ``setup.cfg`` (mypy's settings) and README.md into DEST
(which must be new, or a copy this made before: it is replaced) and compiles
the modules in ``MODULES`` there in place (``build_ext --inplace``; the shared library
goes inside the package, ``mesh/compiled__mypyc...so``, so ``PYTHONPATH=DEST`` is all a
process needs). Nothing compiled is written into this checkout: an extension module
next to its ``.py`` wins the import, and a stale one would hide every later edit.
Needs mypy (mypyc ships with it), a C compiler and the Python headers.

    .venv/bin/python -m bench.mypyc_tree /tmp/mesh-mypyc
    .venv/bin/python -m bench.cpu_split --repeat 5 --compare tree:/tmp/mesh-mypyc
    .venv/bin/python -m bench.run --repeat 3 --nodes 2 --with-ceiling --compare tree:/tmp/mesh-mypyc
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the node's per-task path (py-spy, round 12) that mypyc accepts as it is: the journal
# (SqliteJournal inherits two row classes) and the pool (three mixins) would need
# traits; the wire decoders are generated at run time (mesh/wire/message.py)
MODULES = [
    "mesh/node/intake.py",
    "mesh/node/ledger.py",
    "mesh/node/copies.py",
    "mesh/node/takeover.py",
    "mesh/node/copy_gates.py",
    "mesh/node/replicas.py",
    "mesh/node/zmqloop.py",
    "mesh/node/taskstate.py",
    "mesh/node/front.py",
    "mesh/node/peers.py",
    "mesh/node/channel.py",
    "mesh/node/backup_choice.py",
    "mesh/rendezvous.py",
]

MARK = ".mypyc_tree"      # in DEST: made here, so replacing it loses nothing

_SETUP = """\
import sys
from setuptools import setup
from mypyc.build import mypycify
setup(script_args=["build_ext", "--inplace"],
      ext_modules=mypycify(sys.argv[1:], opt_level="3", group_name="mesh.compiled"))
"""


def build(dest: str, modules: list[str]) -> float:
    """Copy and compile; the build's wall time in seconds."""
    if os.path.exists(dest):
        if not os.path.exists(os.path.join(dest, MARK)):
            raise SystemExit(f"{dest} exists and was not made by bench.mypyc_tree: "
                             "give a new directory")
        shutil.rmtree(dest)
    os.makedirs(dest)
    open(os.path.join(dest, MARK), "w").close()
    skip = shutil.ignore_patterns("__pycache__", "*.so", "results")
    for name in ("mesh", "bench"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(dest, name), ignore=skip)
    for name in ("setup.cfg", "README.md"):        # mypy's settings; setup.cfg names README
        shutil.copy(os.path.join(ROOT, name), dest)
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", _SETUP, *modules], cwd=dest, check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", help="where the compiled copy goes (a new directory, or one this made)")
    ap.add_argument("--modules", nargs="+", default=MODULES, metavar="PATH",
                    help="modules to compile, relative to the checkout (default: the node's "
                         "hot path)")
    args = ap.parse_args()
    took = build(os.path.abspath(args.dest), args.modules)
    print(f"{len(args.modules)} modules compiled into {args.dest} in {took:.0f} s")


if __name__ == "__main__":
    main()
