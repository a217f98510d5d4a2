"""``meshctl keys``: make and manage the mesh's keys (mesh/security/keys.py).

    meshctl keys init DIR                       the mesh pair, a client pair, the operator's admin pair
    meshctl keys list [DIR]                     every key: role, name, fingerprint, secret here or not
    meshctl keys add [DIR] client|admin NAME    a new pair; nodes accept it within seconds
    meshctl keys remove [DIR] client|admin NAME nodes refuse it within seconds
    meshctl keys export [DIR] OUT --node | --client NAME | --admin NAME
                                                what one machine needs, and nothing more
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


def _dir_role_name(args: tuple[str, ...], what: str) -> tuple[str, str, str]:
    if len(args) == 3:
        return args[0], args[1], args[2]
    if len(args) == 2:
        return _dir(None), args[0], args[1]
    die("meshctl", f"keys {what} [DIR] client|admin NAME", EXIT_USAGE)


@keys.command()
@click.argument("args", nargs=-1, metavar="[DIR] client|admin NAME")
def add(args: tuple[str, ...]) -> int:
    """Make a new client or admin key pair in DIR. Running nodes read DIR every few
    seconds and accept it from then on (copy DIR to nodes on other machines).

    \b
    Example:
      meshctl keys add ~/.mesh-keys client billing
    """
    from mesh.security import keys as k
    d, role, name = _dir_role_name(args, "add")
    key = _run(k.add, d, role, name)
    assert isinstance(key, k.Key)
    click.echo(f"added {role} key {name} ({key.fingerprint}...): {key.path}")
    return EXIT_OK


@keys.command()
@click.argument("args", nargs=-1, metavar="[DIR] client|admin NAME")
def remove(args: tuple[str, ...]) -> int:
    """Remove a client or admin key from DIR: running nodes refuse it within seconds
    (its next message, and its events subscription).

    \b
    Example:
      meshctl keys remove ~/.mesh-keys client billing
    """
    from mesh.security import keys as k
    d, role, name = _dir_role_name(args, "remove")
    key = _run(k.remove, d, role, name)
    assert isinstance(key, k.Key)
    click.echo(f"removed {role} key {name} ({key.fingerprint}...)")
    return EXIT_OK


@keys.command()
@click.argument("args", nargs=-1, metavar="[DIR] OUT")
@click.option("--node", "as_node", is_flag=True, help="For a node: the mesh pair and every public key.")
@click.option("--client", "client", metavar="NAME", help="For an app: this client pair and the mesh's public keys.")
@click.option("--admin", "admin", metavar="NAME", help="For an operator: this admin pair and the mesh's public keys.")
def export(args: tuple[str, ...], as_node: bool, client: str | None, admin: str | None) -> int:
    """Copy into OUT what one machine needs and nothing more (a client or an admin
    machine never holds the mesh secret). Copy OUT over a channel you trust.

    \b
    Example:
      meshctl keys export ~/.mesh-keys /tmp/billing-keys --client billing
    """
    from mesh.security import keys as k
    if len(args) not in (1, 2):
        die("meshctl", "keys export [DIR] OUT --node | --client NAME | --admin NAME", EXIT_USAGE)
    d, out = (args[0], args[1]) if len(args) == 2 else (_dir(None), args[0])
    if sum(bool(x) for x in (as_node, client, admin)) != 1:
        die("meshctl", "keys export: give one of --node, --client NAME, --admin NAME", EXIT_USAGE)
    role, name = ((k.NODE, "") if as_node else (k.CLIENT, client or "") if client
                  else (k.ADMIN, admin or ""))
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
