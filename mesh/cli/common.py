"""What meshnode and meshctl share: exit codes, one-line errors, app loading."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import click

# Exit codes (named so tests and scripts can rely on them)
EXIT_OK = 0
EXIT_FAILURE = 1        # the command ran and the answer is "no" (no node answered, task failed)
EXIT_USAGE = 2          # bad flags or values, an --app that does not import
EXIT_START = 3          # the node could not start (address in use, data dir)


def die(prog: str, message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(code)


def run_cli(cmd: click.Command, prog: str, args: list[str] | None = None) -> NoReturn:
    """Run a click command, turning usage errors into one line and a named exit code."""
    try:
        rv = cmd.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        die(prog, "aborted", EXIT_FAILURE)
    except click.ClickException as e:
        hint = " (see --help)" if isinstance(e, click.UsageError) else ""
        die(prog, e.format_message().replace("\n", " ") + hint, EXIT_USAGE)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


def load_app(spec: str) -> Any:
    """Import ``module[:attr]`` (attr defaults to ``app``) and return the Mesh app."""
    from mesh import Mesh
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise click.BadParameter(f"cannot import {module_name!r}: {type(e).__name__}: {e}",
                                 param_hint="--app") from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise click.BadParameter(f"module {module_name!r} has no attribute {attr!r}",
                                 param_hint="--app") from None
    if not isinstance(app, Mesh):
        raise click.BadParameter(f"{spec} is a {type(app).__name__}, not a mesh.Mesh app",
                                 param_hint="--app")
    return app
