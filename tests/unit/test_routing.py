"""Routing's pure parts, table-tested: which queue a task goes to (Celery's forms and
order), what a node serves (its gossiped meta), which nodes a client may send a task
to and what it says when none, the mesh's boundary in membership, and mesh-wide rate
limit shares. Real nodes: tests/integration/test_e2e_routing.py."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from mesh import Mesh
from mesh.capabilities import Serves, decode_names, encode_names, from_meta, meta, name_hash
from mesh.client.fit import fits, unplaceable
from mesh.exceptions import ConfigError
from mesh.node.scope import foreign_members, mesh_of_update
from mesh.ratelimit import mesh_share
from mesh.routing import AppRoutes, check_queue, glob_to_regex, prepare, route


def _fn_router(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
    if name == "fn.by_args":
        return {"queue": f"q{args[0]}"}
    return "fn" if name.startswith("fn.") else None


# ---- which queue ------------------------------------------------------------------------

ROUTES: dict[str, Any] = {"tasks.add": {"queue": "math"}, "reports.*": {"queue": "reports"},
                          "feed.tasks.*": "feeds", "*.video": {"queue": "media", "routing_key": "x"}}


@pytest.mark.parametrize(("name", "call", "task", "routes", "expected"), [
    # the order: the call, the task's option, task_routes, the default queue
    ("tasks.add", "urgent", "slow", ROUTES, "urgent"),
    ("tasks.add", None, "slow", ROUTES, "slow"),
    ("tasks.add", None, None, ROUTES, "math"),
    ("tasks.sub", None, None, ROUTES, "celery"),
    ("tasks.sub", None, None, None, "celery"),
    # globs: '*' is one or more characters, over the whole name
    ("reports.daily", None, None, ROUTES, "reports"),
    ("reports.", None, None, ROUTES, "celery"),
    ("reports", None, None, ROUTES, "celery"),
    ("x.reports.daily", None, None, ROUTES, "celery"),
    ("feed.tasks.import", None, None, ROUTES, "feeds"),     # a bare string is a queue name
    ("a.video", None, None, ROUTES, "media"),               # broker keys are ignored
    ("a.video_many", None, None, ROUTES, "celery"),         # Celery's prefix match would say media
    # exact names win over globs; then globs and regexes in the order given (items format)
    ("reports.x", None, None, [[("reports.*", "first"), ("reports.x", "exact")]], "exact"),
    ("reports.y", None, None, [[(re.compile(r"rep"), "regex"), ("reports.*", "glob")]], "regex"),
    ("reports.y", None, None, [[("reports.*", "glob"), (re.compile(r"rep"), "regex")]], "glob"),
    # a list of routers: the first that answers wins; None falls through
    ("fn.x", None, None, [{"other": "o"}, _fn_router, {"fn.x": "late"}], "fn"),
    ("zz", None, None, [_fn_router, {"zz": "dict"}], "dict"),
    ("fn.by_args", None, None, _fn_router, "q7"),
    ("zz", None, None, "tests.unit.test_routing._fn_router", "celery"),   # a dotted path
    ("fn.y", None, None, ("tests.unit.test_routing:_fn_router",), "fn"),
])
def test_route(name: str, call: str | None, task: str | None, routes: Any, expected: str) -> None:
    assert route(name, call_queue=call, task_queue=task, routers=prepare(routes),
                 default_queue="celery", args=(7,)) == expected


@pytest.mark.parametrize(("routes", "error"), [
    (42, "a router must be"),
    ({"a": 5}, "a route must be a queue name or a dict"),
    ({"a": {"queue": "q", "exchange_typo": 1}}, "mesh routes take only 'queue'"),
    ({"a": {"queue": ""}}, "a queue name must be"),
    ({"a": "x,y"}, "without commas"),
    ({5: "q"}, "a key must be"),
    ([[("a", "b", "c")]], "pairs"),
    ("no.such.module.router", "cannot import router"),
])
def test_bad_routes_are_clear_errors(routes: Any, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        prepare(routes)


def test_a_router_that_returns_junk_is_an_error_naming_the_task() -> None:
    with pytest.raises(ConfigError, match="'t.x'"):
        route("t.x", routers=prepare(lambda *a, **k: 3), default_queue="celery")


@pytest.mark.parametrize("queue", ["", " a", "a,b", "a\nb", 5, None, "x" * 201])
def test_bad_queue_names(queue: Any) -> None:
    with pytest.raises(ConfigError):
        check_queue(queue, "queue")


def test_glob_to_regex_escapes_everything_but_the_star() -> None:
    assert glob_to_regex("a.b+c*").match("a.b+cX")
    assert not glob_to_regex("a.b+c*").match("aXb+cX")
    assert not glob_to_regex("a.*").match("a.")


def test_app_routes_cache_static_routes_and_follow_new_settings() -> None:
    app = Mesh("routing-unit", mdns=False)
    r = AppRoutes()
    assert r.queue(app.conf, "tasks.add") == "celery"
    app.conf.task_routes = {"tasks.*": "t"}
    assert r.queue(app.conf, "tasks.add") == "t"
    app.conf.task_default_queue = "default"
    assert r.queue(app.conf, "other") == "default"
    calls: list[str] = []

    def router(name: str, *a: Any, **k: Any) -> str:
        calls.append(name)
        return "fn"
    app.conf.task_routes = router
    assert [r.queue(app.conf, "x"), r.queue(app.conf, "x")] == ["fn", "fn"]
    assert calls == ["x", "x"]                    # a function is asked on every call
    assert r.queue(app.conf, "x", call_queue="c", task_queue="t") == "c"


def test_send_task_puts_the_queue_in_the_submit() -> None:
    from mesh.wire.protocol import Submit, decode

    class Recorder:
        def __init__(self) -> None:
            self.slots: list[Any] = []

        def submit(self, slot: Any) -> None:
            self.slots.append(slot)

        def lookup(self, task_id: str) -> None:
            return None

    app = Mesh("routing-unit", mdns=False)
    app.conf.task_routes = {"r.*": {"queue": "reports"}}

    @app.task(name="t.own", queue="own")
    def own() -> None: ...

    app._client = Recorder()
    app.send_task("r.a")
    app.send_task("r.a", queue="call")
    own.delay()
    own.apply_async(queue="call")
    app.send_task("x")
    got = []
    for slot in app._client.slots:
        msg = decode(slot.frame)
        assert isinstance(msg, Submit)
        got.append((slot.name, slot.queue, msg.headers["queue"]))
    assert got == [("r.a", "reports", "reports"), ("r.a", "call", "call"),
                   ("t.own", "own", "own"), ("t.own", "call", "call"), ("x", "celery", "celery")]
    app._client = None


def test_task_queue_option_is_checked() -> None:
    app = Mesh("routing-unit", mdns=False)
    with pytest.raises(ConfigError, match="queue"):
        app.task(name="bad", queue="a,b")(lambda: None)


# ---- what a node serves ----------------------------------------------------------------

def test_names_round_trip_as_a_hash_set() -> None:
    names = [f"tasks.t{i}" for i in range(100)]
    text = encode_names(names)
    assert len(text) == 536                                # 400 bytes in base64
    decoded = decode_names(text)
    assert decoded is not None and all(name_hash(n) in decoded for n in names)
    assert name_hash("tasks.other") not in decoded
    assert decode_names("") == frozenset()
    assert decode_names("not base64!") is None
    assert decode_names("AAAAAAA=") is None                # 5 bytes: not whole hashes


@pytest.mark.parametrize(("m", "expected"), [
    (None, Serves("", None, None)),
    ({}, Serves("", None, None)),
    ({"busy": 1}, Serves("", None, None)),                  # a node older than routing
    (meta("b", ["q2", "q1"], ["t.a"]), Serves("b", frozenset({"q1", "q2"}),
                                              frozenset({name_hash("t.a")}))),
    (meta("b", None, []), Serves("b", None, frozenset())),
    ({"mesh": 5, "queues": "q", "names": 7}, Serves("", None, None)),   # junk: not said
    ({"mesh": "b", "queues": ["q", 5]}, Serves("b", None, None)),
    # every queue but some (-X, cancel_consumer); xq means nothing next to queues
    (meta("b", None, [], ["x2", "x1"]), Serves("b", None, frozenset(), frozenset({"x1", "x2"}))),
    (meta("b", ["q"], [], ["x"]), Serves("b", frozenset({"q"}), frozenset())),
    ({"mesh": "b", "queues": ["q"], "xq": ["q"]}, Serves("b", frozenset({"q"}), None)),
    ({"mesh": "b", "xq": "x"}, Serves("b", None, None)),                 # junk: not said
    (meta("b", None, []), Serves("b", None, frozenset())),
])
def test_from_meta(m: Any, expected: Serves) -> None:
    assert from_meta(m) == expected


@pytest.mark.parametrize(("serves", "queue", "name", "accepts", "why"), [
    (Serves("m", None, None), "any", "any", True, ""),
    (Serves("m", frozenset({"a"}), None), "a", "x", True, ""),
    (Serves("m", frozenset({"a"}), None), "b", "x", False, "serves queue(s) a, not 'b'"),
    (Serves("m", None, frozenset({name_hash("x")})), "b", "x", True, ""),
    (Serves("m", None, frozenset({name_hash("x")})), "b", "y", False, "has no task 'y'"),
    (Serves("m", frozenset({"a"}), frozenset()), "b", "y", False,
     "serves queue(s) a, not 'b' and has no task 'y'"),
    (Serves("m", None, None, frozenset({"b"})), "a", "x", True, ""),
    (Serves("m", None, None, frozenset({"b"})), "b", "x", False, "serves every queue but b"),
    (Serves("m", frozenset(), None), "a", "x", False, "serves no queue"),
])
def test_serves_accepts(serves: Serves, queue: str, name: str, accepts: bool, why: str) -> None:
    assert serves.accepts(queue, name) is accepts
    assert serves.why_not(queue, name) == why


# ---- which nodes a client may use --------------------------------------------------------

@dataclass
class Link:
    endpoint: str
    node_id: str
    serves: Serves | None


def _links() -> list[Link]:
    has = frozenset({name_hash("t.add")})
    return [Link("tcp://a", "a", Serves("m", frozenset({"qa"}), has)),
            Link("tcp://b", "b", Serves("m", frozenset({"qb"}), has)),
            Link("tcp://c", "c", Serves("m", None, frozenset())),
            Link("tcp://d", "d", None)]


@pytest.mark.parametrize(("queue", "name", "refused", "expected"), [
    ("qa", "t.add", None, ["a", "d"]),           # d has not said: it may be asked
    ("qb", "t.add", None, ["b", "d"]),
    ("qc", "t.add", None, ["d"]),
    ("qa", "t.add", {"tcp://d"}, ["a"]),
    ("qa", "t.add", {"tcp://a", "tcp://d"}, []),
    ("qa", "t.none", None, ["d"]),
])
def test_fits(queue: str, name: str, refused: set[str] | None, expected: list[str]) -> None:
    assert [n.node_id for n in fits(_links(), queue, name, refused)] == expected


@pytest.mark.parametrize(("links", "queue", "name", "kind", "exc", "words"), [
    (_links()[:3], "qa", "t.none", "", "NotRegistered",
     ["'t.none' is not registered on any alive node of mesh 'm'", "c has no task 't.none'"]),
    (_links()[:3], "qc", "t.add", "", "MeshError",
     ["no alive node of mesh 'm' serving queue 'qc' has task 't.add'",
      "a serves queue(s) qa, not 'qc'", "b serves queue(s) qb, not 'qc'"]),
    ([_links()[3]], "qa", "t.add", "NotRegistered", "NotRegistered", ["d refused it"]),
    ([_links()[3]], "qa", "t.add", "queue", "MeshError", ["serving queue 'qa'"]),
    ([_links()[3]], "qa", "t.add", "journal", "MeshError", ["disk full", "d refused it"]),
    ([], "qa", "t.add", "", "NotRegistered", ["no alive node is known"]),
])
def test_unplaceable(links: list[Link], queue: str, name: str, kind: str, exc: str,
                     words: list[str]) -> None:
    got_exc, message = unplaceable(links, "m", queue, name, {"tcp://d"}, kind, "disk full")
    assert got_exc == exc
    for w in words:
        assert w in message, message


# ---- the mesh's boundary ---------------------------------------------------------------

@pytest.mark.parametrize(("update", "mesh"), [
    ([0, "n", 1, "tcp://x:1", "", 1, {"mesh": "b"}], "b"),
    ([0, "n", 1, "tcp://x:1", "", 1, {"busy": 0}], ""),     # older than meshes: the default mesh
    ([0, "n", 1, "tcp://x:1", "", 1, {"mesh": 3}], ""),
    ([0, "n", 1, "tcp://x:1"], None),                        # no meta: cannot tell
    ([1, "n", 1, "", "o", 1, {"mesh": "b"}], None),          # suspect: not about itself
])
def test_mesh_of_update(update: list[Any], mesh: str | None) -> None:
    assert mesh_of_update(update) == mesh


def test_foreign_members() -> None:
    updates = [[0, "mine", 1, "tcp://a:1", "", 1, {"mesh": "billing"}],
               [0, "theirs", 1, "tcp://b:1", "", 1, {"mesh": "tasks"}],
               [0, "old", 1, "tcp://c:1", "", 1, {}],
               [2, "gone", 1, "", "x"]]
    assert foreign_members(updates, "billing") == {"theirs": "tasks", "old": ""}
    assert foreign_members(updates, "") == {"mine": "billing", "theirs": "tasks"}


# ---- mesh-wide rate limit shares ---------------------------------------------------------

@pytest.mark.parametrize(("total", "peers", "share", "nodes"), [
    (30.0, [], 30.0, 1),
    (30.0, [30.0, 30.0], 10.0, 3),
    (30.0, [15.0, 30], 5.0, 3),            # the smallest total anyone declares, split evenly
    (30.0, [60.0], 15.0, 2),
    (30.0, [None, "x", -1, 0, float("inf"), float("nan"), True, 30.0], 15.0, 2),   # junk ignored
])
def test_mesh_share(total: float, peers: list[Any], share: float, nodes: int) -> None:
    assert mesh_share(total, peers) == pytest.approx((share, nodes))
