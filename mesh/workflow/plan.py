"""A workflow as *units* run one after another, and what happens when a unit ends.

No I/O here: the client (mesh/workflow/submit.py) and the node
(mesh/node/workflows.py) use the same functions, so both derive the same ids.

A unit is a task or a group (a group's coordinator, the ``mesh.group`` task a node
runs itself). Any workflow flattens to a list of units: ``chain(a, group(b, c), d)``
is ``[a, group(b, c), d]``; a chord ``chord(header, body)`` is the chain
``[group(header), body]`` (Celery: a group followed by a task is a chord). Each unit
gets its id: the last unit of a chain gets the chain's id, the others
``derive(chain id, position)``; a chord's body gets the chord's id and its header
``derive(chord id, "header")``; member ``i`` of a group ``derive(group id, i)``; a
chain or chord that is a chain's last step, or a chord that is a chord's body, takes
its parent's id for its handle but derives the others from ``derive(parent,
"tail")`` / ``derive(parent, "body")``, and a chain whose last step is a group, chain
or chord derives its other steps from ``derive(chain id, "steps")`` (else two units
would share an id: the later one was taken for a repeat and never ran);
callbacks ``derive(step id, "link0")``, ``"err0"``... (keys never collide: positions
are numbers, the rest words).

The first unit is sent; the others travel with it, in its Submit headers:

    headers["root_id"]    the workflow's id (what apply_async returned)
    headers["parent_id"]  the unit whose end started this one
    headers["wf"]         {"next": codec([unit, ...]),      the units after this one
                           "report": [group id, index, node], where this member's end
                                                            goes (a group's coordinator)
                           "cb": codec({"link": [...], "link_error": [...],
                                        "chain_link_error": [...]})}

When a unit succeeds, its ``link`` callbacks start with its value, then the next unit
(given the value first, unless immutable), or, at the end, the value is reported to
the group it belongs to. When it fails, its own and its chain's ``link_error``
callbacks run, every later unit is recorded as failed (with the same error, or a
ChordError when a group failed: its next unit is a chord body), and the failure is
reported to the group.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mesh.exceptions import ConfigError
from mesh.wire import codec
from mesh.workflow.ids import GROUP as GROUP  # (defined in ids.py: the node reads them)
from mesh.workflow.ids import REPLACED_BY as REPLACED_BY
from mesh.workflow.ids import derive

# options of a group or chain that its members inherit (their own win)
INHERITED = ("expires", "priority", "time_limit", "soft_time_limit")
FIRST_ONLY = ("countdown", "eta")            # a chain's: its first unit only
MAX_DEPTH = 64                               # workflows nested deeper are refused


def kind(d: Mapping[str, Any]) -> str | None:
    return d.get("subtask_type")


def uid(u: Mapping[str, Any]) -> str:
    """A unit's id (set by ``units``)."""
    tid = (u.get("options") or {}).get("task_id")
    assert isinstance(tid, str), u
    return tid


def members(g: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((g.get("kwargs") or {}).get("tasks") or ())


def member_id(gid: str, i: int, m: Mapping[str, Any]) -> str:
    """The id of member ``i`` of group ``gid``: its own task_id, else derived."""
    own = (m.get("options") or {}).get("task_id")
    return own if isinstance(own, str) and own else derive(gid, i)


def _with_opts(d: Mapping[str, Any], **opts: Any) -> dict[str, Any]:
    out = dict(d)
    out["options"] = {**(d.get("options") or {}), **opts}
    return out


def _inherit(d: Mapping[str, Any], parent_opts: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    given = {k: parent_opts[k] for k in keys if k in parent_opts}
    if not given:          # nothing to add: the same map (never changed in place)
        return d if isinstance(d, dict) else dict(d)
    out = dict(d)
    out["options"] = {**given, **(d.get("options") or {})}
    return out


def _takes_over(d: Any) -> bool:
    """A composite that derives ids of its own from the handle id it is given."""
    return isinstance(d, Mapping) and kind(d) in ("chain", "chord")


def units(d: Mapping[str, Any], hid: str, depth: int = 0,
          ns: str | None = None) -> list[dict[str, Any]]:
    """``d`` (a to_dict() map) as its list of units, each with its task_id set; ``hid``
    is the id of what ``d`` returns (its handle). ``ns`` is what the ids ``d`` derives
    for its other units come from (default ``hid``): a composite that takes its
    parent's handle id (a chain's last step, a chord's body) derives from a key of its
    own, or ``chain(a, chain(b, c))`` gave ``a`` and ``b`` one id (``b`` never ran)."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"workflow nested more than {MAX_DEPTH} levels deep")
    if not isinstance(d, Mapping):
        raise ConfigError(f"a workflow step must be a signature map, got {type(d).__name__}")
    k = kind(d)
    opts = d.get("options") or {}
    own = opts.get("task_id")
    hid = own or hid
    ns = own or ns or hid
    if k is None or k == "group":
        if k is None and not isinstance(d.get("task"), str):
            raise ConfigError(f"a signature needs a task name, got {d.get('task')!r}")
        return [_with_opts(d, task_id=hid)]
    if k == "chord":
        kw = d.get("kwargs") or {}
        header, body = kw.get("header"), kw.get("body")
        if not isinstance(header, Mapping):
            raise ConfigError("a chord needs a header group")
        header = _inherit(header, opts, INHERITED + FIRST_ONLY)
        if body is None:
            return units(header, hid, depth + 1)
        body = _callbacks_to(body, opts)
        body_ns = derive(ns, "body") if isinstance(body, Mapping) and kind(body) == "chord" else ns
        return units(header, derive(ns, "header"), depth + 1) + units(body, hid, depth + 1, body_ns)
    if k == "chain":
        tasks = list((d.get("kwargs") or {}).get("tasks") or ())
        if not tasks:
            raise ConfigError("an empty chain has nothing to run")
        out: list[dict[str, Any]] = []
        n = len(tasks)
        # a group in the last place takes the chain's id, and its members derive(id, i):
        # the steps before it derive from a key of their own
        last = tasks[-1]
        steps = derive(ns, "steps") if isinstance(last, Mapping) and kind(last) in (
            "chain", "chord", "group") else ns
        for i, t in enumerate(tasks):
            t = _inherit(t, opts, INHERITED + (FIRST_ONLY if i == 0 else ()))
            if i == n - 1 and opts.get("link"):
                t = _with_opts(t, link=[*(t.get("options") or {}).get("link", ()), *opts["link"]])
            if i < n - 1:
                out += units(t, derive(steps, i), depth + 1)
            else:
                out += units(t, hid, depth + 1, derive(ns, "tail") if _takes_over(t) else ns)
        errbacks = list(opts.get("link_error") or ())
        if errbacks:                 # a chain's errbacks: run once, by the unit that fails
            out = [_with_opts(u, chain_link_error=[*(u["options"].get("chain_link_error") or ()),
                                                   *errbacks]) for u in out]
        return out
    raise ConfigError(f"unknown workflow kind {k!r}")


def _callbacks_to(body: Mapping[str, Any], opts: Mapping[str, Any]) -> dict[str, Any]:
    """A chord's link/link_error belong to its body (Celery)."""
    add = {k: [*((body.get("options") or {}).get(k) or ()), *opts[k]]
           for k in ("link", "link_error") if opts.get(k)}
    return _with_opts(body, **add) if add else dict(body)


def group_members(g: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A group's members, with the group's inherited options."""
    opts = g.get("options") or {}
    return [_inherit(m, opts, INHERITED + FIRST_ONLY) for m in members(g)]


# ---- ids of a workflow, for marking and lookups ------------------------------------

def walk_ids(us: Sequence[Mapping[str, Any]], depth: int = 0) -> Iterator[tuple[str, str, bool]]:
    """(id, task name, is a handle) of every unit of ``us`` and of the groups in them,
    recursively (members included): what a failure records as failed."""
    for u in us:
        gid = uid(u)
        yield gid, str(u.get("task") or GROUP), True
        if kind(u) == "group" and depth < MAX_DEPTH:
            for i, m in enumerate(group_members(u)):
                yield from walk_ids(units(m, member_id(gid, i, m)), depth + 1)


def own_ids(us: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of the units themselves (a group's members excluded)."""
    return [uid(u) for u in us]


# ---- the headers a unit travels with -------------------------------------------------

def callbacks(u: Mapping[str, Any]) -> dict[str, list[Any]]:
    o = u.get("options") or {}
    return {k: list(o[k]) for k in ("link", "link_error", "chain_link_error") if o.get(k)}


def wf_header(next_units: list[dict[str, Any]], report: list[Any] | None,
              cb: dict[str, list[Any]]) -> dict[str, Any]:
    h: dict[str, Any] = {}
    if next_units:
        h["next"] = codec.dumps(next_units)
    if report:
        h["report"] = list(report)
    if cb:
        h["cb"] = codec.dumps(cb)
    return h


@dataclasses.dataclass
class Wf:
    """A unit's ``wf`` header, decoded."""
    next: list[dict[str, Any]]
    report: list[Any] | None
    cb: dict[str, list[Any]]

    @classmethod
    def of(cls, h: Any) -> "Wf":
        if not isinstance(h, dict):
            return cls([], None, {})
        nxt = codec.loads(h["next"]) if isinstance(h.get("next"), bytes) else []
        cb = codec.loads(h["cb"]) if isinstance(h.get("cb"), bytes) else {}
        rep = h.get("report")
        if not (isinstance(rep, list) and len(rep) == 3 and isinstance(rep[0], str)
                and type(rep[1]) is int and isinstance(rep[2], str)):
            rep = None
        if not isinstance(nxt, list) or not all(isinstance(x, dict) for x in nxt):
            raise ConfigError("a workflow header's 'next' is not a list of units")
        if not isinstance(cb, dict):
            raise ConfigError("a workflow header's 'cb' is not a map")
        return cls(nxt, rep, cb)


# ---- values as msgpack bytes, spliced without decoding ------------------------------

def array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def list_of(values: list[bytes]) -> bytes:
    """The codec bytes of a list, from the codec bytes of each item."""
    return array_header(len(values)) + b"".join(values)


NIL = b"\xc0"


def call_payload(args: list[Any], kwargs: Mapping[str, Any], first: bytes | None) -> bytes:
    """The ``[args, kwargs]`` payload, with ``first`` (codec bytes of a value: the
    parent's result) put before ``args`` when given."""
    if first is None:
        return codec.dump_call(args, dict(kwargs))
    return (array_header(2) + array_header(len(args) + 1) + first
            + b"".join(codec.dumps(a) for a in args) + codec.dumps(dict(kwargs)))
