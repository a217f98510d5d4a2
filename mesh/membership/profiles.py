"""Membership settings: one frozen, commented dataclass and named profiles.

``profile("lan")`` is the default for a mesh on one LAN; ``"local"`` is for several
nodes on one machine; ``"test"`` is fast, for loopback tests. A profile is a starting
point: ``dataclasses.replace(LAN, probe_interval=1.0)`` changes one field.

How fast a killed node is seen dead (all figures for a mesh of up to 10 nodes, where
log10(n) is floored at 1; see mesh/membership/timing.py and docs/membership.md):

    detection = wait until someone probes it            ~ 0 .. probe_interval (roughly)
              + one probe round (ping, then indirect)    = probe_interval
              + suspicion timeout                        = suspicion_mult * probe_interval
                                                           .. x suspicion_max_timeout_mult,
                                                           falling as others confirm
              + spreading the dead verdict by gossip      ~ gossip_interval per hop

memberlist's LAN profile (1 s probes, 500 ms timeout, suspicion_mult 4, max x6) gives
about 5-7 s. mesh's target on a LAN is median < 2 s and worst < 4 s, so LAN below
probes every 0.3 s with a 0.15 s timeout (LAN round trips are well under 1 ms; the
timeout is there for a busy peer's event loop, and the indirect probes and the
suspicion period still give a slow peer about 1.2 s to answer before anyone can call
it dead), suspects for 3 probe intervals at least (0.9 s) and 2.7 s at most, and
needs a single independent confirmation to drop from the maximum to the minimum.
Measured in the simulation (tests/unit/test_membership_sim.py, docs/membership.md), a
killed node among 3..10 nodes is seen dead by all others after 1.4 s median and
2.5 s at worst (300 crashes each); among 1,000, after 3.3 s.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mesh.exceptions import ConfigError


@dataclass(frozen=True)
class MembershipConfig:
    # -- probing (failure detection) --------------------------------------------------
    probe_interval: float = 0.3          # s between probes of one member (shuffled round robin)
    probe_timeout: float = 0.15          # s to wait for a direct ack before asking others
    indirect_checks: int = 3             # k: members asked to probe the target for us
    # -- suspicion --------------------------------------------------------------------
    suspicion_mult: float = 3.0          # min suspicion timeout = mult * log10(n) * probe_interval
    suspicion_max_timeout_mult: float = 3.0  # max suspicion timeout = this * min timeout
    suspicion_confirmations: int = 1     # independent suspecters that bring the timeout to min
    # -- dissemination ----------------------------------------------------------------
    retransmit_mult: int = 4             # each update is passed on mult * log10(n+1) times
    gossip_interval: float = 0.2         # s between gossip rounds (only when there is news)
    gossip_fanout: int = 3               # members each gossip round sends to
    max_piggyback: int = 8               # updates per message (ping, ack, gossip)
    # -- local health (Lifeguard) -----------------------------------------------------
    awareness_max_multiplier: int = 8    # an unhealthy node stretches its timers up to this x
    # -- state sync, joining, forgetting ----------------------------------------------
    push_pull_interval: float = 30.0     # s between full state syncs with one random member
    #                                      (grows with n above 32 members: timing.push_pull_interval)
    join_retry_interval: float = 1.0     # s between retries of the seeds while we know no live member
    dead_node_reclaim: float = 60.0      # s a dead or left member is kept (listed, gossiped to) before
    #                                      it is forgotten
    reconnect_interval: float = 2.0      # s between pings of one random dead member, so that a healed
    #                                      partition heals the membership too (Serf's reconnect); 0 = never
    meta_refresh_interval: float = 1.0   # s between calls of get_local_meta(); the meta is gossiped
    #                                      when it changed. 0 = only when update_local_meta() is called
    # -- limits -------------------------------------------------------------------------
    max_members: int = 10_000            # other members this node keeps (dead, left included); news of
    #                                      more is ignored: a peer cannot grow the table without bound

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if type(v) is bool or not isinstance(v, (int, float)) or math.isnan(v):
                raise ConfigError(f"{f.name} must be a number, got {v!r}")
        positive = ("probe_interval", "probe_timeout", "suspicion_mult", "gossip_interval",
                    "push_pull_interval", "join_retry_interval")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError(f"probe_timeout ({self.probe_timeout}) must be shorter than "
                              f"probe_interval ({self.probe_interval}): indirect probes need the rest")
        if self.suspicion_max_timeout_mult < 1:
            raise ConfigError("suspicion_max_timeout_mult must be >= 1")
        for name in ("indirect_checks", "suspicion_confirmations", "retransmit_mult",
                     "gossip_fanout", "max_piggyback", "awareness_max_multiplier", "max_members"):
            v = getattr(self, name)
            if type(v) is not int or v < (1 if name in ("retransmit_mult", "gossip_fanout",
                                                         "max_piggyback",
                                                         "awareness_max_multiplier",
                                                         "max_members") else 0):
                raise ConfigError(f"{name} must be an int >= 1 (>= 0 for indirect_checks and "
                                  f"suspicion_confirmations), got {v!r}")
        for name in ("dead_node_reclaim", "reconnect_interval", "meta_refresh_interval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")


#: A mesh on one LAN (the default). See the module docstring for the timing budget.
LAN = MembershipConfig()

#: Several nodes on one machine (loopback). Round trips are tiny, but the nodes share
#: the CPUs with each other's children, so probes are slower and more patient than on
#: a LAN (a node must be unresponsive for ~2 s, not ~1.2 s, before it can be declared
#: dead); gossip is faster and state syncs more frequent, as all traffic is local.
LOCAL = dataclasses.replace(LAN, probe_interval=0.5, probe_timeout=0.25, gossip_interval=0.1,
                            push_pull_interval=15.0, dead_node_reclaim=30.0)

#: Loopback tests: probes every 0.2 s, so that a crash is seen in about a second;
#: a suspect still gets 0.8 s at least to refute; dead members are forgotten after 10 s.
TEST = dataclasses.replace(LAN, probe_interval=0.2, probe_timeout=0.1, suspicion_mult=4.0,
                           gossip_interval=0.05, push_pull_interval=5.0,
                           join_retry_interval=0.2, dead_node_reclaim=10.0, reconnect_interval=0.5,
                           meta_refresh_interval=0.5)

PROFILES: dict[str, MembershipConfig] = {"lan": LAN, "local": LOCAL, "test": TEST}


def profile(name: str) -> MembershipConfig:
    """The named profile (``lan``, ``local``, ``test``; case-insensitive)."""
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown membership profile {name!r}; "
                          f"choose one of: {', '.join(PROFILES)}") from None
