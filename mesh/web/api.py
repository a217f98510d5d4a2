"""The JSON API: Flower's verbs where they make sense, and the dashboard's own.

Flower's (same paths and parameters; POST for what changes something):

    GET  /api/workers                    nodes: stats, active, reserved, scheduled, registered
    POST /api/worker/shutdown/NODE       warm shutdown
    POST /api/worker/pool/grow/NODE?n=1  POST /api/worker/pool/shrink/NODE?n=1
    POST /api/task/async-apply/NAME      body {"args": [...], "kwargs": {...}, "countdown": ...}
    POST /api/task/send-task/NAME        the same (mesh sends by name either way)
    POST /api/task/apply/NAME?timeout=   the same, and waits for the result
    GET  /api/task/result/ID?timeout=    GET /api/task/info/ID
    POST /api/task/revoke/ID?terminate=true&signal=SIGTERM
    POST /api/task/rate-limit/NAME?ratelimit=10/m[&workername=NODE]
    POST /api/task/timeout/NAME?soft=S&hard=S[&workername=NODE]
    GET  /api/tasks?limit&workername&taskname&state&received_start&received_end&search
         (limit: at most that many tasks in all, the newest, as Flower's)
    GET  /api/task/types                 GET /api/queues/length

The dashboard's (docs/dashboard.md): /api/mesh/nodes, /api/mesh/tasks (paged with a
cursor), /api/mesh/task/ID, /api/mesh/series, /api/mesh/summary, /api/periodic.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mesh import states
from mesh.web import paging
from mesh.web.server import SERVER_KEY, error, json_response

if TYPE_CHECKING:
    from mesh.web.component import HttpServer

MAX_WAIT = 300.0


def _server(request: web.Request) -> "HttpServer":
    return request.app[SERVER_KEY]


async def _params(request: web.Request) -> dict[str, Any]:
    """Query parameters, then a JSON body or form fields (Flower takes either)."""
    out: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError as e:
                raise web.HTTPBadRequest(text=json.dumps({"error": f"body is not JSON: {e}"}),
                                         content_type="application/json") from None
            if not isinstance(body, dict):
                raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}',
                                         content_type="application/json")
            out.update(body)
        else:
            out.update(await request.post())
    return out


def _num(p: dict[str, Any], key: str, default: float | None = None) -> float | None:
    v = p.get(key)
    if v in (None, ""):
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{key} must be a number, got {v!r}"}),
                                 content_type="application/json") from None


def _time(p: dict[str, Any], key: str) -> float | None:
    """A unix time, or an ISO 8601 text (Flower's received_start is 'YYYY-MM-DD HH:MM')."""
    v = p.get(key)
    if v in (None, ""):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        pass
    try:
        return dt.datetime.fromisoformat(str(v)).timestamp()
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{key} must be a unix time or an "
                                                  f"ISO 8601 date, got {v!r}"}),
                                 content_type="application/json") from None


def _flag(p: dict[str, Any], key: str) -> bool:
    v = p.get(key)
    return v is True or (isinstance(v, str) and v.lower() in ("1", "true", "yes", "on"))


# ---- nodes ------------------------------------------------------------------------------

async def workers(request: web.Request) -> web.StreamResponse:
    s, p = _server(request), request.query
    only = p.get("workername") or None
    stats = await s.asker.control("status", only=only)
    if _flag(dict(p), "status"):
        return json_response({n: "error" not in v for n, v in stats.items()})
    out: dict[str, Any] = {}
    extra = await asyncio.gather(*(s.asker.control(c, only=only) for c in
                                   ("active", "reserved", "scheduled", "registered")))
    for name, st in stats.items():
        if "error" in st:
            out[name] = st
            continue
        out[name] = {"stats": st, "active": extra[0].get(name), "reserved": extra[1].get(name),
                     "scheduled": extra[2].get(name), "registered": extra[3].get(name)}
    return json_response(out)


async def _node_control(request: web.Request, command: str, args: dict[str, Any]) -> web.StreamResponse:
    name = request.match_info["name"]
    answer = (await _server(request).asker.control(command, args, only=name))[name]
    if isinstance(answer, dict) and "error" in answer:
        return error(404 if "no alive node" in str(answer["error"]) else 400, str(answer["error"]))
    return json_response({"message": f"{command} on {name}", "result": answer})


async def shutdown(request: web.Request) -> web.StreamResponse:
    return await _node_control(request, "shutdown", {})


async def pool_grow(request: web.Request) -> web.StreamResponse:
    n = int(_num(await _params(request), "n", 1) or 1)
    return await _node_control(request, "pool_grow", {"n": n})


async def pool_shrink(request: web.Request) -> web.StreamResponse:
    n = int(_num(await _params(request), "n", 1) or 1)
    return await _node_control(request, "pool_shrink", {"n": n})


async def mesh_nodes(request: web.Request) -> web.StreamResponse:
    """Members as this node sees them, with each alive one's status."""
    s = _server(request)
    members = s.asker.members()
    stats = await s.asker.control("status", timeout=2.0)
    for m in members:
        m["status"] = stats.get(m["node"])
    return json_response({"node": s.node.name, "members": members, "time": time.time()})


# ---- tasks ------------------------------------------------------------------------------

def _query_args(p: dict[str, Any]) -> dict[str, Any]:
    st = p.get("state") or p.get("states") or ""
    return {"states": [x for x in str(st).upper().split(",") if x],
            "name": p.get("taskname") or p.get("name") or None,
            "search": p.get("search") or None,
            "since": _time(p, "received_start") or _time(p, "since"),
            "until": _time(p, "received_end") or _time(p, "until")}


async def _gather_tasks(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    """At most ``limit`` tasks from every node (or one), merged newest first, with the
    cursor of the next page and each node's error, if any (mesh/web/paging.py)."""
    s = _server(request)
    limit = int(_num(p, "limit", 100) or 100)
    if not 1 <= limit <= 1000:
        raise web.HTTPBadRequest(text='{"error": "limit must be 1..1000"}',
                                 content_type="application/json")
    args = {**_query_args(p), "limit": limit}
    only = p.get("workername") or p.get("node") or None
    try:
        cursor = paging.cursor_in(p.get("cursor"))
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "bad cursor: pass back the one a page gave"}',
                                 content_type="application/json") from None
    if cursor is not None and not cursor["held"]:   # a next page: only nodes with more rows
        answers: dict[str, Any] = {}
        for name, at in cursor["at"].items():
            if at is not None and (only is None or only == name):
                answers.update(await s.asker.everywhere("web.tasks", {**args, "cursor": at},
                                                        only=name))
    else:                                      # a first page (again, past held tasks shown)
        if cursor is not None:
            args["limit"] = min(limit + cursor["held"], 1000)
        try:
            answers = await s.asker.everywhere("web.tasks", args, only=only)
        except ValueError as e:
            raise web.HTTPBadRequest(text=json.dumps({"error": str(e)}),
                                     content_type="application/json") from None
    return paging.merge(answers, limit, cursor["held"] if cursor is not None else 0)


async def tasks(request: web.Request) -> web.StreamResponse:
    """Flower's /api/tasks: ``{uuid: task}``, newest first."""
    page = await _gather_tasks(request, dict(request.query))
    return json_response({t["uuid"]: t for t in page["tasks"]})


async def mesh_tasks(request: web.Request) -> web.StreamResponse:
    return json_response(await _gather_tasks(request, dict(request.query)))


async def _find_task(s: "HttpServer", tid: str) -> dict[str, Any] | None:
    answers = await s.asker.everywhere("web.task", {"task_id": tid})
    found = [a for a in answers.values() if isinstance(a, dict) and "uuid" in a]
    if not found:
        return None
    # the node that ran it tells most (a backup's copy of the result has no arguments)
    found.sort(key=lambda t: (t.get("state") in states.READY_STATES, not t.get("copy"),
                              t.get("timestamp") or 0.0), reverse=True)
    best = dict(found[0])
    best["seen_on"] = list(dict.fromkeys(t.get("worker") for t in found))  # each once: a
    # backup's copy names the node that ran the task too
    return best


async def task_info(request: web.Request) -> web.StreamResponse:
    tid = request.match_info["task_id"]
    t = await _find_task(_server(request), tid)
    if t is None:
        return error(404, f"no node knows task {tid}")
    return json_response(t)


async def task_result(request: web.Request) -> web.StreamResponse:
    tid = request.match_info["task_id"]
    timeout = _num(dict(request.query), "timeout")
    return json_response(await _server(request).submitter.result(tid, timeout))


async def _submit(request: web.Request, wait: bool) -> web.StreamResponse:
    name = request.match_info["name"]
    p = await _params(request)
    args, kwargs = p.get("args", []), p.get("kwargs", {})
    if isinstance(args, str) or isinstance(kwargs, str):
        try:
            args = json.loads(args) if isinstance(args, str) else args
            kwargs = json.loads(kwargs) if isinstance(kwargs, str) else kwargs
        except ValueError as e:
            return error(400, f"args and kwargs must be JSON: {e}")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return error(400, "args must be a JSON list and kwargs a JSON object")
    options = {k: p[k] for k in ("countdown", "eta", "expires", "priority", "task_id",
                                 "time_limit", "soft_time_limit") if p.get(k) not in (None, "")}
    try:
        answer = await _server(request).submitter.send(name, args, kwargs, options,
                                                      _num(p, "timeout", 30.0) if wait else None)
    except (ValueError, TypeError) as e:
        return error(400, str(e))
    return json_response(answer)


async def async_apply(request: web.Request) -> web.StreamResponse:
    return await _submit(request, wait=False)


async def apply(request: web.Request) -> web.StreamResponse:
    return await _submit(request, wait=True)


async def revoke(request: web.Request) -> web.StreamResponse:
    tid = request.match_info["task_id"]
    p = await _params(request)
    args = {"task_ids": [tid], "terminate": _flag(p, "terminate"),
            "signal": p.get("signal") or "SIGKILL"}
    answers = await _server(request).asker.control("revoke", args)
    return json_response({"message": f"Revoked '{tid}'", "nodes": answers})


async def rate_limit(request: web.Request) -> web.StreamResponse:
    p = await _params(request)
    name = request.match_info["name"]
    rate = p.get("ratelimit", p.get("rate"))
    answers = await _server(request).asker.control(
        "rate_limit", {"task": name, "rate": rate or None}, only=p.get("workername") or None)
    return _control_answer(answers, f"new rate limit set for {name}")


async def time_limit(request: web.Request) -> web.StreamResponse:
    p = await _params(request)
    name = request.match_info["name"]
    answers = await _server(request).asker.control(
        "time_limit", {"task": name, "soft": _num(p, "soft"), "hard": _num(p, "hard")},
        only=p.get("workername") or None)
    return _control_answer(answers, f"new time limits set for {name}")


def _control_answer(answers: dict[str, Any], message: str) -> web.StreamResponse:
    errors = {n: a["error"] for n, a in answers.items() if isinstance(a, dict) and "error" in a}
    if errors and len(errors) == len(answers):
        return json_response({"error": "; ".join(f"{n}: {e}" for n, e in errors.items()),
                              "nodes": answers}, 400)
    return json_response({"message": message, "nodes": answers})


async def task_types(request: web.Request) -> web.StreamResponse:
    reg = await _server(request).asker.control("registered")
    names = sorted({t["name"] for a in reg.values() if isinstance(a, list) for t in a})
    return json_response({"task-types": names})


async def queues_length(request: web.Request) -> web.StreamResponse:
    """mesh has no broker queue: each node's tasks waiting for a child, summed."""
    s = _server(request)
    stats = await s.asker.control("status")
    queued = sum(int(v.get("queued", 0)) for v in stats.values() if "error" not in v)
    return json_response({"active_queues": [{"name": s.metrics.queue, "messages": queued}],
                          "nodes": {n: v.get("queued") for n, v in stats.items()}})


async def series(request: web.Request) -> web.StreamResponse:
    p = dict(request.query)
    window = _num(p, "window", 900.0) or 900.0
    step = int(_num(p, "step", max(1.0, window / 90)) or 10)
    args = {"since": time.time() - window, "step": step}
    try:
        answers = await _server(request).asker.everywhere("web.series", args,
                                                          only=p.get("node") or None)
    except ValueError as e:
        return error(400, str(e))
    return json_response({"step": step, "window": window, "nodes": answers})


async def summary(request: web.Request) -> web.StreamResponse:
    return json_response(await _server(request).asker.everywhere("web.summary"))


async def mesh_task(request: web.Request) -> web.StreamResponse:
    return await task_info(request)


async def periodic(request: web.Request) -> web.StreamResponse:
    """Periodic entries as the nodes see them (the ``beat`` control command, merged by
    mesh.periodic.merge_views): schedule, next run, last run and who fired it, the node
    that fires the next one (docs/periodic.md)."""
    from mesh.periodic import merge_views
    merged = merge_views(await _server(request).asker.control("beat"))
    entries = []
    for e in merged["entries"]:
        last = e.get("last_run") or {}
        entries.append({**e, "last": e.get("last_run"), "last_run": last.get("due"),
                        "node": last.get("fired_by")})
    return json_response({"available": True, "entries": entries, "nodes": merged["nodes"],
                          "errors": merged["errors"]})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/workers", workers)
    r.add_post("/api/worker/shutdown/{name}", shutdown)
    r.add_post("/api/worker/pool/grow/{name}", pool_grow)
    r.add_post("/api/worker/pool/shrink/{name}", pool_shrink)
    r.add_post("/api/task/async-apply/{name}", async_apply)
    r.add_post("/api/task/send-task/{name}", async_apply)
    r.add_post("/api/task/apply/{name}", apply)
    r.add_get("/api/task/result/{task_id}", task_result)
    r.add_get("/api/task/info/{task_id}", task_info)
    r.add_post("/api/task/revoke/{task_id}", revoke)
    r.add_post("/api/task/rate-limit/{name}", rate_limit)
    r.add_post("/api/task/timeout/{name}", time_limit)
    r.add_get("/api/tasks", tasks)
    r.add_get("/api/task/types", task_types)
    r.add_get("/api/queues/length", queues_length)
    r.add_get("/api/mesh/nodes", mesh_nodes)
    r.add_get("/api/mesh/tasks", mesh_tasks)
    r.add_get("/api/mesh/task/{task_id}", mesh_task)
    r.add_get("/api/mesh/series", series)
    r.add_get("/api/mesh/summary", summary)
    r.add_get("/api/periodic", periodic)
