"""Every meshctl/meshnode command explains itself with an example."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mesh.cli.meshctl import meshctl
from mesh.cli.meshnode import meshnode


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, prefix + (name,))
        else:
            out.append(prefix + (name,))
    return out


@pytest.mark.parametrize("path", _commands(meshctl), ids=lambda p: " ".join(p) or "meshctl")
def test_every_meshctl_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(meshctl, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "meshctl" in result.output.split("Example", 1)[1]


def test_the_contract_commands_exist() -> None:
    names = {" ".join(p) for p in _commands(meshctl)}
    assert {"status", "ping", "events", "inspect", "revoke", "call", "result", "top"} <= names


def test_meshctl_peers_help_says_where_nodes_come_from_without_it() -> None:
    # "--peers: Nodes to ask (default: MESH_PEERS)", though meshctl without either finds
    # nodes by mDNS (a new user's meshctl status found nodes it was told nothing of)
    result = CliRunner().invoke(meshctl, ["--help"])
    peers = " ".join(result.output.split("--peers", 1)[1].split("-j, --json")[0].split())
    assert "MESH_PEERS" in peers and "mDNS" in peers and "--mesh" in peers, peers


def test_meshnode_help_has_an_example() -> None:
    result = CliRunner().invoke(meshnode, ["--help"])
    assert result.exit_code == 0 and "Example" in result.output
    for flag in ("--no-journal", "--result-expires", "--no-events", "--data-dir"):
        assert flag in result.output


@pytest.mark.parametrize("command", ["result", "revoke"])
def test_examples_show_a_task_id_as_mesh_makes_them(command: str) -> None:
    # ids start with the time in ms (48 bits): the example's must be a recent time
    import re
    import time
    result = CliRunner().invoke(meshctl, [command, "--help"])
    example = result.output.split("Example", 1)[1]
    ids = re.findall(r"\b([0-9a-f]{8})-([0-9a-f]{4})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", example)
    assert ids, example
    ms = int(ids[0][0] + ids[0][1], 16)
    assert time.mktime((2024, 1, 1, 0, 0, 0, 0, 0, 0)) < ms / 1000 < time.time() + 86400
