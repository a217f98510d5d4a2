"""The gate: what each role may send a node, checked before anything is dispatched.

With keys, every message a node's front door reads carries the key it came with
(its ZAP ``User-Id``), and the key's role is looked up in the node's key directory
*now*, so a key removed a moment ago is refused on its next message. The allow-list
below is the whole policy; a message type it does not name is for nodes only (the
safe default for types added later, such as node-to-node handoffs). Without keys
there are no roles and the gate is not consulted (docs/security.md: who can do what).

    message                 client  admin  node
    SUBMIT                    yes    yes    yes
    CONTROL ping, members,    yes    yes    yes    (what a client asks: membership,
      result, duplicate,                            results, duplicates, a workflow's
      wf.states, wf.progress                        states)
    CONTROL inspect kind       -     yes    yes    (active, status, registered, ...)
    CONTROL control kind       -     yes    yes    (revoke, shutdown, pool_grow, ...)
    membership (PING..)        -      -     yes
    any other type             -      -     yes
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.security.keys import ADMIN, CLIENT, NODE
from mesh.wire.protocol import Control, Submit

EVERYONE = frozenset({CLIENT, ADMIN, NODE})
OPERATORS = frozenset({ADMIN, NODE})
NODES = frozenset({NODE})

# control commands a client key may send (the client's I/O thread sends these)
# (and a workflow's states: GroupResult.ready() and friends ask every node)
CLIENT_COMMANDS = frozenset({"ping", "members", "result", "duplicate", "wf.states",
                             "wf.progress"})

# by message type; a type not named here is for nodes only
MESSAGES: dict[type[Any], frozenset[str]] = {Submit: EVERYONE, Control: EVERYONE}
# by kind of control command (mesh/node/commands.py: "inspect" reads, "control" changes)
COMMANDS: dict[str, frozenset[str]] = {"client": EVERYONE, "inspect": OPERATORS,
                                       "control": OPERATORS}

KindOf = Callable[[str], "str | None"]     # command name -> "inspect" / "control" / None


def command_roles(command: str, kind_of: KindOf) -> frozenset[str]:
    """Who may send control command ``command`` (an unknown one: whoever may send
    commands at all; the node answers that it does not know it)."""
    if command in CLIENT_COMMANDS:
        return COMMANDS["client"]
    return COMMANDS.get(kind_of(command) or "control", OPERATORS)


def refusal(role: str | None, msg: Any, kind_of: KindOf) -> str | None:
    """None if a sender in ``role`` may send ``msg``; else the reason it may not."""
    if role is None:
        return "this key is not (or no longer) in the mesh's key directory"
    allowed = MESSAGES.get(type(msg), NODES)
    if role not in allowed:
        return f"a {role} key may not send {type(msg).__name__} messages"
    if type(msg) is Control:
        who = command_roles(msg.command, kind_of)
        if role not in who:
            return (f"control command {msg.command!r} needs an "
                    f"{' or '.join(sorted(who - {NODE}))} key; this is a {role} key")
    return None
