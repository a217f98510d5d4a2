"""``meshctl keys``: make and manage the mesh's keys (mesh/security/keys.py).

    meshctl keys init DIR                       the mesh pair, a client pair, the operator's admin pair
    meshctl keys list [DIR]                     every key: role, name, fingerprint, secret here or not
    meshctl keys add [DIR] client|admin NAME    a new pair; nodes accept it within seconds
    meshctl keys remove [DIR] client|admin NAME nodes refuse it within seconds
    meshctl keys export [DIR] OUT --node | --client NAME | --admin NAME
                                                what one machine needs, and nothing more

Each of add, remove and export takes the key both ways: the words ``client NAME``
(``admin NAME``, ``node``) or the options ``--client NAME`` (``--admin NAME``,
``--node``).
    meshctl keys rotate [DIR] begin|commit|finish   a new mesh key, with no downtime

DIR defaults to MESH_KEYS (``meshctl --keys DIR keys list`` works too). The steps of
a rotation, and the threat model, are in docs/security.md.
"""
from __future__ import annotations

import json
import os

import click

from mesh.cli.common import EXIT_OK, EXIT_USAGE, die


def _dir(value: str | None) -> str:
    d = value or os.environ.get("MESH_KEYS", "")
    if not d:
        die("meshctl", "which key directory? give DIR or set MESH_KEYS (meshctl --keys DIR)", EXIT_USAGE)
    return d


def _run(fn: object, *args: object) -> object:
    from mesh.exceptions import ConfigError
    try:
        return fn(*args)  # type: ignore[operator]
    except ConfigError as e:
        die("meshctl", str(e), EXIT_USAGE)
    except OSError as e:
        die("meshctl", f"{e.filename or ''}: {e.strerror}", EXIT_USAGE)


@click.group()
def keys() -> None:
    """Make and manage the mesh's CurveZMQ keys (docs/security.md).

    \b
    Example:
      meshctl keys init ~/.mesh-keys
      meshnode --keys ~/.mesh-keys --app tasks
      meshctl --keys ~/.mesh-keys status
    """


@keys.command()
@click.argument("directory", metavar="DIR")
@click.pass_context
def init(ctx: click.Context, directory: str) -> int:
    """Make the mesh's keys in DIR (0700; files 0600): the mesh key pair (nodes),
    a client pair "default" (apps) and an admin pair "operator" (meshctl).

    \b
    Example:
      meshctl keys init ~/.mesh-keys
    """
    from mesh.security import keys as k
    made = _run(k.init, directory)
    assert isinstance(made, list)
    click.echo(f"made the mesh's keys in {os.path.abspath(os.path.expanduser(directory))}:")
    for key in made:
        click.echo(f"  {key.role:6} {key.name:12} {key.fingerprint}...")
    click.echo("nodes: meshnode --keys DIR; apps: Mesh(keys=DIR) or MESH_KEYS=DIR; "
               "meshctl --keys DIR. To give each machine only what it needs: "
               "meshctl keys export DIR OUT --node | --client NAME | --admin NAME")
    return EXIT_OK


@keys.command("list")
@click.argument("directory", metavar="[DIR]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(directory: str | None, as_json: bool) -> int:
    """Every key in DIR: role, name, fingerprint, and whether its secret is here.

    \b
    Example:
      meshctl keys list ~/.mesh-keys
    """
    from mesh.security import keys as k
    found = _run(k.scan, _dir(directory))
    assert isinstance(found, list)
    if as_json:
        click.echo(json.dumps([k.summary(key) for key in found], indent=2))
        return EXIT_OK
    click.echo(f"{'role':6}  {'name':16}  {'fingerprint':11}  secret")
    for key in found:
        click.echo(f"{key.role:6}  {key.name:16}  {key.fingerprint}...  "
                   f"{'here' if key.secret is not None else '-'}")
    return EXIT_OK


# A key's role and name, spelt either way: words at the end (``client billing``, as
# ``keys add`` and ``keys remove`` were) or options (``--client billing``, as ``keys
# export`` was); each command takes both (docs/security.md).
CLIENT_OPTION = click.option("--client", "client", metavar="NAME",
                             help="The client pair NAME (an app's); the same as the words "
                                  "'client NAME'.")
ADMIN_OPTION = click.option("--admin", "admin", metavar="NAME",
                            help="The admin pair NAME (an operator's); the same as the words "
                                 "'admin NAME'.")


def _role(args: tuple[str, ...], usage: str, client: str | None = None,
          admin: str | None = None, node: bool = False,
          node_word: bool = False) -> tuple[list[str], str, str]:
    """(the arguments before the role, role, name): from one of the options, else from
    the words at the end of ``args``: ``client NAME``, ``admin NAME`` (``node NAME``
    too, which keys.add refuses with a hint), or with ``node_word`` ``node`` alone."""
    given = [(r, n) for r, n, on in (("node", "", node), ("client", client, client is not None),
                                     ("admin", admin, admin is not None)) if on]
    if len(given) > 1:
        die("meshctl", f"{usage}: give one role, not {' and '.join('--' + r for r, _ in given)}",
            EXIT_USAGE)
    if given:
        return list(args), given[0][0], given[0][1] or ""
    if node_word and args and args[-1] == "node":
        return list(args[:-1]), "node", ""
    if len(args) >= 2 and args[-2] in ("client", "admin", "node") and not node_word:
        return list(args[:-2]), args[-2], args[-1]
    if len(args) >= 2 and args[-2] in ("client", "admin"):
        return list(args[:-2]), args[-2], args[-1]
    die("meshctl", f"{usage}: which key? (see --help)", EXIT_USAGE)


def _dir_role_name(args: tuple[str, ...], what: str, client: str | None,
                   admin: str | None) -> tuple[str, str, str]:
    usage = f"keys {what} [DIR] client|admin NAME (or --client NAME, --admin NAME)"
    rest, role, name = _role(args, usage, client, admin)
    if len(rest) > 1:
        die("meshctl", usage, EXIT_USAGE)
    return (rest[0] if rest else _dir(None)), role, name


@keys.command()
@click.argument("args", nargs=-1, metavar="[DIR] client|admin NAME")
@CLIENT_OPTION
@ADMIN_OPTION
def add(args: tuple[str, ...], client: str | None, admin: str | None) -> int:
    """Make a new client or admin key pair in DIR. Running nodes read DIR every few
    seconds and accept it from then on (copy DIR to nodes on other machines).

    \b
    Example:
      meshctl keys add ~/.mesh-keys client billing
      meshctl keys add ~/.mesh-keys --client billing     # the same
    """
    from mesh.security import keys as k
    d, role, name = _dir_role_name(args, "add", client, admin)
    key = _run(k.add, d, role, name)
    assert isinstance(key, k.Key)
    click.echo(f"added {role} key {name} ({key.fingerprint}...): {key.path}")
    return EXIT_OK


@keys.command()
@click.argument("args", nargs=-1, metavar="[DIR] client|admin NAME")
@CLIENT_OPTION
@ADMIN_OPTION
def remove(args: tuple[str, ...], client: str | None, admin: str | None) -> int:
    """Remove a client or admin key from DIR: running nodes refuse it within seconds
    (its next message, and its events subscription).

    \b
    Example:
      meshctl keys remove ~/.mesh-keys client billing
      meshctl keys remove ~/.mesh-keys --client billing  # the same
    """
    from mesh.security import keys as k
    d, role, name = _dir_role_name(args, "remove", client, admin)
    key = _run(k.remove, d, role, name)
    assert isinstance(key, k.Key)
    click.echo(f"removed {role} key {name} ({key.fingerprint}...)")
    return EXIT_OK


@keys.command()
@click.argument("args", nargs=-1, metavar="[DIR] OUT [node | client NAME | admin NAME]")
@click.option("--node", "as_node", is_flag=True,
              help="For a node: the mesh pair and every public key; the same as the word 'node'.")
@CLIENT_OPTION
@ADMIN_OPTION
def export(args: tuple[str, ...], as_node: bool, client: str | None, admin: str | None) -> int:
    """Copy into OUT what one machine needs and nothing more (a client or an admin
    machine never holds the mesh secret): for a node (--node), an app (--client NAME)
    or an operator (--admin NAME). Copy OUT over a channel you trust.

    \b
    Example:
      meshctl keys export ~/.mesh-keys /tmp/billing-keys --client billing
      meshctl keys export ~/.mesh-keys /tmp/billing-keys client billing   # the same
      meshctl keys export ~/.mesh-keys /tmp/node-keys --node
    """
    from mesh.security import keys as k
    usage = "keys export [DIR] OUT --node | --client NAME | --admin NAME (or node, client NAME, admin NAME)"
    rest, role, name = _role(args, usage, client, admin, as_node, node_word=True)
    if len(rest) not in (1, 2):
        die("meshctl", usage, EXIT_USAGE)
    d, out = (rest[0], rest[1]) if len(rest) == 2 else (_dir(None), rest[0])
    made = _run(k.export, d, out, role, name)
    assert isinstance(made, list)
    click.echo(f"exported {len(made)} key(s) to {out} for a {role}"
               + (f" ({name})" if name else ""))
    return EXIT_OK


@keys.command()
@click.argument("args", nargs=-1, metavar="[DIR] begin|commit|finish")
def rotate(args: tuple[str, ...]) -> int:
    """Rotate the mesh key with no downtime, in three steps; copy DIR to every machine
    after each (docs/security.md). begin: a next key, accepted everywhere; commit:
    nodes serve with it (the old one still accepted); finish: the old one is dropped.

    \b
    Example:
      meshctl keys rotate ~/.mesh-keys begin
    """
    from mesh.security import keys as k
    if len(args) not in (1, 2):
        die("meshctl", "keys rotate [DIR] begin|commit|finish", EXIT_USAGE)
    d, step = (args[0], args[1]) if len(args) == 2 else (_dir(None), args[0])
    said = _run(k.rotate, d, step)
    click.echo(str(said))
    return EXIT_OK
