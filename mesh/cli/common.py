"""What meshnode and meshctl share: exit codes, one-line errors, app loading."""
from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import click

from mesh.einfo import failure_text, raised_at

_F = TypeVar("_F", bound=Callable[..., Any])

# Exit codes (named so tests and scripts can rely on them)
EXIT_OK = 0
EXIT_FAILURE = 1        # the command ran and the answer is "no" (no node answered, task failed)
EXIT_USAGE = 2          # bad flags or values, an --app that does not import
EXIT_START = 3          # the node could not start (address in use, data dir)
EXIT_UNREACHABLE = 4    # no node could be reached to ask (not the same as a "no" answer)


class Seconds(click.FloatRange):
    """A number of seconds (a ``click.FloatRange``) that is a number: nan passed every
    range check (each comparison with it is false), and ``-t nan`` or ``-t inf`` ended
    meshctl in a traceback as it waited for answers; ``finite``: not inf either."""

    def __init__(self, *args: Any, finite: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.finite = finite

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if math.isnan(rv) or (self.finite and math.isinf(rv)):
            self.fail(f"{value!r} is not a {'finite ' if self.finite else ''}number of seconds",
                      param, ctx)
        return rv


def node_option(help: str) -> Callable[[_F], _F]:
    """``--node NAME`` (repeatable), also spelt as Celery's ``-d/--destination`` with
    names separated by commas (``celery inspect active -d w1@h,w2@h``)."""
    return click.option("--node", "-d", "--destination", "nodes", multiple=True,
                        metavar="NAME", callback=_names, help=help)


def _names(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n.strip() for v in value for n in v.split(",") if n.strip())


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


def load_app(spec: str) -> tuple[Any, str]:
    """The Mesh app named by ``--app``, found the way Celery's ``-A`` finds one.

    ``module:attr`` is that attribute. ``module`` (or ``package``) is searched: its
    ``app``, ``celery`` or ``mesh`` attribute if it is a Mesh app; for a package, its
    ``celery`` then ``mesh`` submodule, searched the same way; else the one Mesh app
    among the module's attributes. So ``-A proj`` finds ``proj/celery.py``'s app.
    Returns the app and where it was found (``module:attr``)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return find_app(spec)
    except AppConfigError as e:   # the app loads, its configuration is wrong: say that
        raise click.UsageError(str(e)) from None
    except LookupError as e:
        raise click.BadParameter(str(e), param_hint="--app") from None


class AppConfigError(LookupError):
    """Importing the app raised ConfigError (a bad MESH_* value, a misspelt setting):
    the configuration is wrong, not --app."""


def _import(module_name: str) -> ModuleType | None:
    """The module, or None if it (not something it imports) does not exist."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            return None
        raise LookupError(f"cannot import {module_name!r}: {failure_text(e)}") from None
    except Exception as e:
        from mesh.exceptions import ConfigError
        if isinstance(e, ConfigError):
            at = raised_at(e).replace(" (", ", ", 1)[:-1]    # where in the app's code
            raise AppConfigError(f"{e} (while importing the app's module {module_name!r}{at})") from None
        raise LookupError(f"cannot import {module_name!r}: {failure_text(e)}") from None


def find_app(spec: str) -> tuple[Any, str]:
    """The app for ``spec`` and where it was found (``module:attr``); LookupError
    with a message saying what was tried."""
    from mesh import Mesh
    if spec.endswith(".py") and ":" not in spec:     # a file name, where a module is wanted
        name = spec[:-3].replace("/", ".").strip(".")
        raise LookupError(f"{spec!r} is a file name; --app takes a module: --app {name} "
                          "(run from the directory that holds it, or put it on PYTHONPATH)")
    module_name, colon, attr = spec.partition(":")
    module = _import(module_name)
    if module is None and not colon and "." in module_name:   # module.attr, as Celery allows
        parent, _, attr = module_name.rpartition(".")
        module = _import(parent)
        if module is not None:
            module_name, colon = parent, ":"
    if module is None:
        raise LookupError(f"cannot import {module_name!r}: no module of that name "
                          f"(the current directory and PYTHONPATH are searched)")
    if colon:
        app = getattr(module, attr, None)
        if app is None:
            raise LookupError(f"module {module_name!r} has no attribute {attr!r}")
        if not isinstance(app, Mesh):
            raise LookupError(f"{spec} is a {type(app).__name__}, not a mesh.Mesh app")
        return app, f"{module_name}:{attr}"
    found = _search(module)
    if found is not None:
        return found
    tried = ["app", "celery", "mesh"]
    if getattr(module, "__path__", None):        # a package: its celery.py, then mesh.py
        for sub in ("celery", "mesh"):
            submodule = _import(f"{module_name}.{sub}")
            if submodule is not None:
                found = _search(submodule)
                if found is not None:
                    return found
        tried += [f"{module_name}.celery", f"{module_name}.mesh"]
    raise LookupError(f"no mesh.Mesh app in {module_name!r} (looked for its attributes "
                      f"{', '.join(tried[:3])}"
                      + (f", the modules {tried[3]} and {tried[4]}" if len(tried) > 3 else "")
                      + f", and any Mesh app in it); name one with --app {module_name}:ATTR")


def _search(module: ModuleType) -> tuple[Any, str] | None:
    from mesh import Mesh
    for attr in ("app", "celery", "mesh"):
        value = getattr(module, attr, None)
        if isinstance(value, Mesh):
            return value, f"{module.__name__}:{attr}"
    apps = [(k, v) for k, v in vars(module).items() if isinstance(v, Mesh)]
    if len(apps) == 1:
        return apps[0][1], f"{module.__name__}:{apps[0][0]}"
    return None
