#!/usr/bin/env python3
"""Mutation testing for mesh: change one line, run the tests that should notice, undo.

Two sources of mutants:

* a hand-written list (scripts/mutations.toml): the changes a reviewer would worry
  about, each with the tests that guard it;
* ``--auto``: operator mutants generated from the source of the modules named (a
  comparison, arithmetic or boolean operator swapped, ``not`` dropped, a constant
  changed, an ``if`` condition forced), sampled with a fixed seed, each run against the
  tests mapped to its module (AUTO_TESTS below).

Every mutant runs in a scratch copy of the tree (mesh/, tests/, docs/, the config files),
never in the working tree, with PYTHONPATH pointing at the copy: the test process and
the ``meshnode`` processes the integration tests start both import the mutated code.
A mutant is *killed* when its tests fail (or time out), *survived* when they pass.
The unmutated copy is run first; if its tests fail, nothing is scored.

    scripts/mutate.py                         # the hand-written list
    scripts/mutate.py --only placement        # mutants whose name contains a word
    scripts/mutate.py --auto mesh/wire/protocol.py --sample 20
    scripts/mutate.py --auto all --sample 12 --budget 1800   # stop after 30 min

Slow by nature (minutes to an hour): not part of the default test run.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("mesh", "tests", "docs", "setup.cfg", "pyproject.toml")
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable

# the tests that guard each module, fastest and most likely to fail first (-x stops there)
AUTO_TESTS: dict[str, list[str]] = {
    "mesh/wire/protocol.py": ["tests/unit/test_protocol.py", "tests/unit/test_protocol_doc.py",
                              "tests/unit/test_protocol_fuzz.py"],
    "mesh/wire/message.py": ["tests/unit/test_protocol.py", "tests/unit/test_protocol_classes.py",
                             "tests/unit/test_protocol_fuzz.py"],
    "mesh/wire/codec.py": ["tests/unit/test_codec.py", "tests/unit/test_protocol_doc.py"],
    "mesh/node/sqlite_journal.py": ["tests/unit/test_journal.py", "tests/unit/test_journal_messages.py",
                                    "tests/integration/test_e2e_journal.py",
                                    "tests/integration/test_e2e_promises.py"],
    "mesh/node/memory_journal.py": ["tests/unit/test_journal.py",
                                    "tests/integration/test_e2e_promises.py"],
    "mesh/node/ledger.py": ["tests/unit/test_node_inprocess.py",
                            "tests/integration/test_e2e_promises.py",
                            "tests/integration/test_e2e_journal.py",
                            "tests/integration/test_e2e_retries.py"],
    "mesh/client/placement.py": ["tests/unit/test_placement.py",
                                 "tests/integration/test_e2e_promises.py::test_tasks_submitted_after_a_node_died_go_to_the_live_one",
                                 "tests/integration/test_e2e_scheduling.py"],
    "mesh/client/io.py": ["tests/unit/test_client_scripted.py",
                          "tests/unit/test_client_resilience.py", "tests/unit/test_protocol_doc.py",
                          "tests/integration/test_e2e_promises.py",
                          "tests/integration/test_e2e_tasks.py",
                          "tests/integration/test_e2e_retries.py",
                          "tests/integration/test_e2e_journal.py",
                          "tests/integration/test_e2e_shutdown.py"],
    "mesh/client/replies.py": ["tests/unit/test_client_scripted.py",
                               "tests/unit/test_client_resilience.py",
                               "tests/integration/test_e2e_promises.py",
                               "tests/integration/test_e2e_retries.py",
                               "tests/integration/test_e2e_shutdown.py",
                               "tests/integration/test_e2e_msgsize.py"],
    "mesh/result.py": ["tests/unit/test_result.py", "tests/unit/test_result_waits.py",
                       "tests/unit/test_client_scripted.py"],
    "mesh/routing.py": ["tests/unit/test_routing.py"],
    "mesh/capabilities.py": ["tests/unit/test_routing.py", "tests/unit/test_routing_node.py"],
    "mesh/client/fit.py": ["tests/unit/test_routing.py", "tests/unit/test_routing_node.py"],
    "mesh/node/scope.py": ["tests/unit/test_routing.py", "tests/unit/test_routing_node.py"],
}

# token -> what it becomes (one mutant per replacement)
SWAPS: dict[str, tuple[str, ...]] = {
    "==": ("!=",), "!=": ("==",), "<": ("<=", ">"), "<=": ("<", ">"), ">": (">=", "<"),
    ">=": (">", "<"), "+": ("-",), "-": ("+",), "*": ("/",), "//": ("*",), "**": ("*",),
    "and": ("or",), "or": ("and",), "is": ("is not",), "in": ("not in",),
    "True": ("False",), "False": ("True",), "break": ("continue",), "continue": ("break",),
    "+=": ("-=",), "-=": ("+=",), "min": ("max",), "max": ("min",),
}


@dataclasses.dataclass
class Mutant:
    name: str
    file: str
    find: str          # text that occurs exactly once in the file
    replace: str
    tests: list[str]
    line: int = 0

    def apply(self, root: Path) -> None:
        path = root / self.file
        text = path.read_text()
        count = text.count(self.find)
        if count != 1:
            raise ValueError(f"{self.name}: {self.find!r} occurs {count} times in {self.file}")
        path.write_text(text.replace(self.find, self.replace))


def load_list(path: Path) -> list[Mutant]:
    data = tomllib.loads(path.read_text())
    return [Mutant(name=m["name"], file=m["file"], find=m["find"], replace=m["replace"],
                   tests=list(m["tests"])) for m in data["mutant"]]


def auto_mutants(file: str, tests: list[str]) -> list[Mutant]:
    """Operator mutants of ``file``: each is a whole line changed at one token, so that
    ``find`` (the line with its indent and line break) is unique in most cases; lines
    that are not unique, docstrings, comments, logging and annotations are skipped."""
    source = (ROOT / file).read_text()
    lines = source.splitlines(keepends=True)
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    out: list[Mutant] = []
    toks = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(toks):
        row, col = tok.start
        if row > len(lines) or tok.type in (tokenize.ENDMARKER, tokenize.NEWLINE):
            continue
        line = lines[row - 1]
        if counts[line] != 1 or source.count(line) != 1 or tok.end[0] != row:
            continue
        stripped = line.strip()
        if stripped.startswith(("log.", "logging.", "raise ", "assert ", "def ", "class ", "@",
                                "\"", "import ", "from ")) or "no mutate" in line:
            continue
        if ":" in line[:col] and "=" not in line[:col] and stripped.split()[0] not in (
                "if", "elif", "while", "return", "for"):
            continue                       # likely an annotation
        variants: tuple[str, ...] = ()
        if tok.type in (tokenize.OP, tokenize.NAME) and tok.string in SWAPS:
            variants = SWAPS[tok.string]
            if tok.string in ("min", "max") and (i + 1 >= len(toks) or toks[i + 1].string != "("):
                continue
        elif tok.type == tokenize.NAME and tok.string == "not" and toks[i + 1].string != "in":
            variants = ("",)
        elif tok.type == tokenize.NUMBER and tok.string.isdigit():
            n = int(tok.string)
            variants = (str(n + 1),) if n > 1 else (str(1 - n),)
        if not variants:
            continue
        for v in variants:
            new = line[:col] + v + line[tok.end[1]:]
            if v == "":
                new = line[:col] + line[tok.end[1]:].lstrip(" ")
            try:                           # only mutants that still compile
                ast.parse(source.replace(line, new, 1))
            except SyntaxError:
                continue
            out.append(Mutant(name=f"{file}:{row}:{tok.string}->{v or 'nothing'}", file=file,
                              find=line, replace=new, tests=tests, line=row))
    return out


def scratch_copy(source: Path = ROOT) -> Path:
    root = Path(tempfile.mkdtemp(prefix="mesh-mutate-"))
    for name in COPY:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, root / name)
    return root


def run_tests(root: Path, tests: list[str], timeout: float, show: bool = False) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    t0 = time.monotonic()
    try:
        p = subprocess.run([PYTHON, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                            "-m", "not slow", *tests], cwd=root, env=env, timeout=timeout,
                           capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    if show and p.returncode != 0:
        print(p.stdout[-4000:], p.stderr[-2000:], sep="\n")
    if p.returncode == 0:
        return "passed", time.monotonic() - t0
    if p.returncode == 1:
        return "failed", time.monotonic() - t0
    if p.returncode in (2, 3, 4):      # collection or import broken by the mutant (the
        return "broken", time.monotonic() - t0   # unmutated copy ran these same paths)
    return f"error (exit {p.returncode}: {tail[:120]})", time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", type=Path, default=ROOT / "scripts" / "mutations.toml")
    ap.add_argument("--only", default="", help="run the mutants whose name contains this")
    ap.add_argument("--auto", nargs="*", default=None,
                    help="generate operator mutants of these files ('all': every file mapped)")
    ap.add_argument("--sample", type=int, default=10, help="auto mutants per file")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    ap.add_argument("--budget", type=float, default=0.0, help="stop starting mutants after this many s")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    if args.auto is not None:
        files = list(AUTO_TESTS) if args.auto in ([], ["all"]) else args.auto
        rng = random.Random(args.seed)
        mutants: list[Mutant] = []
        for f in files:
            found = auto_mutants(f, AUTO_TESTS[f])
            mutants += sorted(rng.sample(found, min(args.sample, len(found))), key=lambda m: m.line)
    else:
        mutants = load_list(args.list)
    mutants = [m for m in mutants if args.only in m.name]
    if not mutants:
        print("no mutants selected", file=sys.stderr)
        return 2

    started = time.monotonic()
    pristine = scratch_copy()      # the tree as it is now: edits made during the run do not leak in
    try:
        return run(args, mutants, pristine, started)
    finally:
        shutil.rmtree(pristine, ignore_errors=True)


def run(args: argparse.Namespace, mutants: list[Mutant], pristine: Path, started: float) -> int:
    baseline = scratch_copy(pristine)
    try:
        needed = sorted({t for m in mutants for t in m.tests})
        verdict, secs = run_tests(baseline, needed, args.timeout * 3, show=True)
        print(f"baseline: {verdict} in {secs:.0f} s ({len(needed)} test paths)", flush=True)
        if verdict != "passed":
            print("the unmutated tests do not pass: nothing scored", file=sys.stderr)
            return 2
    finally:
        shutil.rmtree(baseline, ignore_errors=True)

    results = []
    for m in mutants:
        if args.budget and time.monotonic() - started > args.budget:
            print(f"budget of {args.budget:.0f} s spent: {len(mutants) - len(results)} mutant(s) not run")
            break
        root = scratch_copy(pristine)
        try:
            m.apply(root)
            verdict, secs = run_tests(root, m.tests, args.timeout)
        except ValueError as e:
            verdict, secs = f"stale ({e})", 0.0
        finally:
            shutil.rmtree(root, ignore_errors=True)
        killed = verdict in ("failed", "timeout", "broken")
        results.append({"name": m.name, "file": m.file, "verdict": verdict, "killed": killed,
                        "seconds": round(secs, 1), "replace": m.replace.strip()})
        print(f"{'KILLED ' if killed else 'SURVIVED' if verdict == 'passed' else 'ERROR  '} "
              f"{secs:6.1f} s  {m.name}" + ("" if killed or verdict == "passed" else f"  [{verdict}]"),
              flush=True)
    scored = [r for r in results if r["verdict"] in ("passed", "failed", "timeout", "broken")]
    killed = sum(r["killed"] for r in scored)
    print(f"\nscore: {killed}/{len(scored)} killed"
          + (f" ({100 * killed / len(scored):.0f}%)" if scored else "")
          + f"; {len(results) - len(scored)} not scored; {time.monotonic() - started:.0f} s")
    for r in scored:
        if not r["killed"]:
            print(f"  survived: {r['name']}: {r['replace'][:100]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
