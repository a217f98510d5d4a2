"""A backup's gossiped ``boot`` (the id of its process: a new one means it restarted
and lost the copies it kept in memory) is whatever the peer says. Real in-process
nodes (mesh.testing.running_node)."""
from __future__ import annotations

from test_node_inprocess import app, dealer, run, submit, until

from mesh.testing import running_node


def test_a_backup_whose_boot_is_nan_is_not_seen_restarting_at_every_check() -> None:
    """The holder compared the boot it noted when it copied to the backup with the one
    gossiped now (``boots[b] != boot``): nan is never equal to itself, so a backup
    gossiping boot=nan was 'restarted' at every membership check (each second), and
    every task the holder held was copied to it again each time ('backup liar
    restarted: copying 5 task(s)' once a second). A boot that is not text counts as
    none said (as from a node that says none)."""
    async def main() -> None:
        async with running_node(app, name="liar") as liar:
            liar.routing.meta["boot"] = float("nan")    # what it gossips (the meta's last word)
            liar.membership.update_local_meta()
            async with running_node(app, name="holder", autorun=False, concurrency=1,
                                    peers=[liar.address]) as h, dealer(h) as to_h:
                h.shedder.shed = lambda now: 0
                await until(lambda: (m := h.membership.member("liar")) is not None
                            and "liar" in h.replicas.choice.alive_ids()
                            and isinstance(m.meta.get("boot"), float),
                            "the holder to know the liar and its meta")
                for i in range(5):
                    await to_h.send(submit(f"b-{i}"))
                await until(lambda: h.replicas.copies_confirmed >= 5,
                            "the five copies made and confirmed")
                checks = 0
                check = h.replicas.check_members

                def counted(now: float) -> None:
                    nonlocal checks
                    checks += 1
                    check(now)
                h.replicas.check_members = counted    # type: ignore[method-assign]
                sent = h.replicas.copies_sent
                await until(lambda: checks >= 3, "three more membership checks", timeout=20)
                assert h.replicas.copies_sent == sent      # not copied again
    run(main())
