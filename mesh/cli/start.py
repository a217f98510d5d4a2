"""``app.start(argv)`` and ``app.worker_main(argv)``: Celery's way to run its command
from the app's own module (Celery's "Next Steps" ``proj/celery.py`` ends with
``if __name__ == '__main__': app.start()``; Docker entrypoints call
``app.worker_main(['worker', '--loglevel=INFO'])``).

``worker`` runs ``meshnode`` with the rest of the arguments, every other command
``meshctl`` (``inspect active``, ``status``, ``call ...``), both in this process and
with ``-A`` naming the module that holds the app, as ``meshnode -A`` would load it:
``python -m proj.celery worker -l INFO`` is ``meshnode -A proj.celery:app -l INFO``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from mesh.exceptions import ConfigError

# Celery's global options taken before the subcommand (the rest are its broker's)
APP_OPTIONS = ("-A", "--app")
WORKDIR = "--workdir"


def app_spec(app: Any) -> str:
    """``module:attr`` of the module attribute that is ``app``: the one ``meshnode -A``
    loads. An app of the script being run (``__main__``) is named by the module the
    script is (``python -m proj.celery``: ``proj.celery``; ``python tasks.py``:
    ``tasks``), which the node imports again, as ``meshnode -A`` would."""
    found: list[tuple[str, str]] = []
    for name, module in list(sys.modules.items()):
        attrs = getattr(module, "__dict__", None)
        if not isinstance(attrs, dict) or name == "mesh" or name.startswith("mesh."):
            continue
        found += [(name, attr) for attr, value in list(attrs.items())
                  if value is app and not attr.startswith("_")]
    for name, attr in sorted(found, key=lambda f: (f[0] == "__main__", f[1] not in ("app", "celery"))):
        if name != "__main__":
            return f"{name}:{attr}"
        module_name = _main_module_name()
        if module_name:
            return f"{module_name}:{attr}"
    raise ConfigError(f"app.start(): cannot tell which module holds {app!r} (meshnode loads "
                      "the app by its module): make it a module attribute (app = Mesh(...)) "
                      "and run `meshnode -A MODULE` instead")


def _main_module_name() -> str | None:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name.removesuffix(".__main__"))     # python -m proj.celery
    path = getattr(main, "__file__", None)                 # python tasks.py
    if not path or not path.endswith(".py"):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in (os.path.abspath(p or ".") for p in sys.path):
        return None
    return str(os.path.basename(path)[:-3])


def command(app: Any, argv: Iterable[str] | None) -> tuple[str, list[str]]:
    """(``meshnode`` or ``meshctl``, its arguments) for Celery's ``argv``: ``sys.argv``
    when None (the program's name is dropped, as is a leading ``celery``)."""
    args = [str(a) for a in (sys.argv if argv is None else argv)]
    if args and (argv is None or args[0] == sys.argv[0]
                 or os.path.basename(args[0]) in ("celery", "__main__.py")):
        args = args[1:]
    spec: str | None = None
    front: list[str] = []
    while args and args[0].startswith("-"):        # Celery's options before the command
        if args[0] in ("-h", "--help"):
            return "meshctl", ["-A", spec or app_spec(app), "--help"]
        opt, _, value = args.pop(0).partition("=")
        if opt not in (*APP_OPTIONS, WORKDIR):
            raise ConfigError(f"app.start(): {opt} before the command is not one mesh takes "
                              f"there (only {', '.join((*APP_OPTIONS, WORKDIR))}; Celery's broker "
                              "options have no use: mesh has no broker)")
        if not value:
            if not args:
                raise ConfigError(f"app.start(): {opt} needs a value")
            value = args.pop(0)
        if opt == WORKDIR:
            front += [WORKDIR, value]
        else:
            spec = value
    spec = spec or app_spec(app)
    if args and args[0] == "worker":
        return "meshnode", ["-A", spec, *front, *args[1:]]
    if not args:                                   # `python -m proj.celery`: the commands
        args = ["--help"]
    if front:
        os.chdir(front[1])
    return "meshctl", ["-A", spec, *args]


def start(app: Any, argv: Iterable[str] | None = None) -> int:
    """Run the command; returns 0 when it ended well (a node stopped by SIGTERM),
    exits with its status otherwise (a usage error: 2), as the command would."""
    prog, args = command(app, argv)
    if args[-1:] == ["--help"] and prog == "meshctl":
        print(f"app.start(): 'worker [meshnode's options]' runs a node for {args[1]}; the other "
              "commands are meshctl's:\n", file=sys.stderr)
    if prog == "meshnode":
        from mesh.cli.meshnode import meshnode as cmd
    else:
        from mesh.cli.meshctl import meshctl as cmd
    from mesh.cli.common import run_cli
    try:
        run_cli(cmd, prog, args)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    return 0
