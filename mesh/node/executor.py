"""The pool as a component, and the journal's: how the node runs and keeps tasks.

``pool`` starts the prefork children (mesh/node/pool.py) and, at shutdown, hands the
unstarted tasks to other nodes at once (mesh/node/handoff.py) and lets the running
ones finish (up to ``shutdown_timeout``). ``journal`` opens the journal the config asks for (sqlite in the
data dir, or in memory with ``--no-journal``) and closes it last.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mesh.node.component import Component, NodeStartError
from mesh.node.journal import DataDirInUse, JournalError, open_journal
from mesh.node.pool import Pool
from mesh.ratelimit import TokenBucket, parse_rate
from mesh.security.files import private_dir
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

HANDOFF_SETTLE = 5.0     # s a stopping node waits for the answers of other nodes to its
                         # handoffs and copies, after its running tasks finished


class Storage(Component):
    """Opens the node's journal (the data dir lock with it) and closes it last."""

    name = "journal"

    async def start(self, node: "Node") -> None:
        path = node.config.data_path
        try:
            private_dir(path)
        except OSError as e:
            hint = "" if node.data_dir_given else (
                f" (the default, under the home of user {_user()}: give --data-dir a "
                "directory it may write)")
            raise NodeStartError(f"cannot create data dir {path}: {e.strerror}{hint}") from e
        try:
            node.journal = open_journal(node.config)
        except JournalError as e:
            why = str(e)
            if isinstance(e, DataDirInUse) and not node.data_dir_given:
                # the default data dir is named after the node (or host and port): the
                # same one means the same address, most likely already served
                why += (f" (the default data dir follows the node's name and port: is another "
                        f"node already serving {node.config.bind}?)")
            raise NodeStartError(why) from e
        other = node.journal.claim(node.app.main)
        if other is not None:
            node.journal.close()
            raise NodeStartError(
                f"the data dir {path} holds the journal of mesh {other!r}, and this node "
                f"serves mesh {node.app.main!r}: it would fail that mesh's tasks as not "
                f"registered. Give this node its own --data-dir (or --name), or start a "
                f"node of mesh {other!r} on it to finish them")

    def close(self, node: "Node") -> None:
        node.journal.close()


class Executor(Component):
    """The prefork pool: started children, per-task rate limits, the shutdown drain."""

    name = "pool"
    requires = ("journal", "front", "events")

    async def start(self, node: "Node") -> None:
        pool = Pool(node.app, node.config, node.name, node.ledger, node.config.pool_size)
        pool.home = node.address
        for name, task in node.app.tasks.items():
            rate = parse_rate(task.options.rate_limit)
            if rate is not None:
                pool.limits[name] = TokenBucket(rate)
        node.pool = pool
        node.spawn(pool.run(), name="pool")

    async def stop(self, node: "Node") -> None:
        # unstarted tasks go to other nodes (kept in the journal when none is alive)
        # (and those set aside by a fence: mesh/node/fence.py)
        node.handoff.give_away(node.pool.begin_stop() + node.reclaim.fence.release())
        node.front.flush()
        await node.pool.finish(node.config.shutdown_timeout)
        node.front.flush()
        if node.handoff.started:
            await node.handoff.settle(HANDOFF_SETTLE)
        if node.replicas.started:
            await node.replicas.settle(HANDOFF_SETTLE)     # results of the drain copied
        node.front.flush()

    def close(self, node: "Node") -> None:
        node.pool.close()


def _user() -> str:
    """The name of the user this process runs as (its id when it has none)."""
    import pwd
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
