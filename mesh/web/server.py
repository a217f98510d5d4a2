"""The HTTP side: the aiohttp application, its guards, the page, /metrics, /healthz.

Guards (docs/dashboard.md, "Security"):

* Host: a server bound to loopback answers only requests addressed to a loopback
  name (``127.0.0.1``, ``localhost``, ``[::1]``), so a web page whose DNS name is
  rebound to 127.0.0.1 cannot read it.
* Token: with ``MESH_HTTP_TOKEN`` set, every request but ``/healthz`` needs it:
  ``Authorization: Bearer TOKEN``, or once ``?token=TOKEN`` in a browser (which then
  keeps it in an HttpOnly cookie).
* CSRF: state-changing calls are POST only, and need the ``X-CSRF-Token`` header equal
  to the ``mesh_csrf`` cookie (a double-submit token: another site can neither read
  the cookie nor set the header), and an ``Origin``, when sent, that is this server.
"""
from __future__ import annotations

import hmac
import importlib.resources
import ipaddress
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from mesh.web.component import HttpServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSRF_COOKIE = "mesh_csrf"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_COOKIE = "mesh_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                ".html": "text/html"}
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

SERVER_KEY: web.AppKey["HttpServer"] = web.AppKey("server")


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json_text(data), status=status, content_type="application/json")


def json_text(data: Any) -> str:
    """``data`` as JSON a browser parses. What peers say (a member's meta, shown whole;
    their events) is anything: inf and nan are not JSON (json.dumps wrote Infinity,
    which the page's resp.json() and JSON.parse refuse: one peer's meta made the node
    view fail on every node of the mesh), and a key that is bytes made it raise."""
    try:
        return json.dumps(data, default=str, allow_nan=False)
    except (ValueError, TypeError):
        return json.dumps(_plain(data), default=str, allow_nan=False)


def _plain(v: Any) -> Any:
    """``v`` as JSON can say it: a float that is inf or nan as null, a key that is not
    a string as its ``str``."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k if isinstance(k, str) else str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _host_only(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _same(given: str, token: str) -> bool:
    """A token given (any text: hmac.compare_digest refuses str with non-ASCII characters,
    which made a guess like ?token=é a 500) equals the token (or the CSRF cookie), in
    constant time."""
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                               token.encode("utf-8", "surrogateescape"))


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    server = request.app[SERVER_KEY]
    if server.loopback and not is_loopback(_host_only(request.host or "")):
        return error(421, f"this dashboard is bound to loopback and answers only requests for "
                          f"127.0.0.1, localhost or [::1], not {request.host!r}")
    token = server.token
    set_token = False
    if token and request.path != "/healthz":
        given = request.headers.get("Authorization", "")
        bearer = given[7:] if given.startswith("Bearer ") else ""
        cookie = request.cookies.get(TOKEN_COOKIE, "")
        query = request.query.get("token", "") if request.method == "GET" else ""
        if not any(_same(v, token) for v in (bearer, cookie, query)):
            return error(401, "this dashboard needs its token: Authorization: Bearer TOKEN, "
                              "or open it once with ?token=TOKEN")
        set_token = _same(query, token) and not _same(cookie, token)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        if request.method != "POST":
            return error(405, "state-changing calls are POST")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return error(403, f"cross-site request refused (Origin {origin!r})")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        header = request.headers.get(CSRF_HEADER, "")
        if not cookie or not _same(header, cookie):
            return error(403, f"missing CSRF token: send the {CSRF_COOKIE} cookie's value in "
                              f"the {CSRF_HEADER} header (GET /api/csrf gives both)")
    if token and request.path == "/" and "token" in request.query:
        # the page opened once with ?token=: the cookie holds it now; the address bar,
        # the history and a shared screen should not (the fragment, #/task/ID, stays)
        resp: web.StreamResponse = web.Response(status=303, headers={"Location": "/"})
    else:
        resp = await handler(request)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    resp.headers.setdefault("Content-Security-Policy", CSP)
    if CSRF_COOKIE not in request.cookies and CSRF_COOKIE not in resp.cookies and not resp.prepared:
        resp.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), samesite="Strict", path="/")
    if set_token and not resp.prepared:
        resp.set_cookie(TOKEN_COOKIE, token, samesite="Strict", httponly=True, path="/")
    return resp


def _static(name: str) -> bytes:
    return importlib.resources.files("mesh.web").joinpath("static", name).read_bytes()


async def index(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_static("index.html"), content_type="text/html",
                        headers={"Cache-Control": "no-store"})


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    ext = name[name.rfind("."):] if "." in name else ""
    if "/" in name or name.startswith(".") or ext not in STATIC_TYPES:
        raise web.HTTPNotFound()
    try:
        body = _static(name)
    except (FileNotFoundError, IsADirectoryError):
        raise web.HTTPNotFound() from None
    return web.Response(body=body, content_type=STATIC_TYPES[ext],
                        headers={"Cache-Control": "no-cache"})


async def metrics(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER_KEY]
    body = generate_latest(server.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.StreamResponse:
    """200 while the node takes work; 503 once it is stopping (load balancers drain)."""
    node = request.app[SERVER_KEY].node
    stopping = node.stopping
    busy, total, queued = node.load()
    body = {"status": "stopping" if stopping else "ok", "node": node.name,
            "address": node.address, "busy": busy, "children": total, "queued": queued}
    return json_response(body, 503 if stopping else 200)


async def csrf(request: web.Request) -> web.StreamResponse:
    """The CSRF token for scripts: send it back as the header, with the cookie."""
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    resp = json_response({"header": CSRF_HEADER, "token": token, "cookie": CSRF_COOKIE})
    resp.set_cookie(CSRF_COOKIE, token, samesite="Strict", path="/")
    return resp


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: batches of the mesh's events, as JSON."""
    server = request.app[SERVER_KEY]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        await server.live.stream(resp.write, server.closing)
    except (ConnectionResetError, ConnectionError):
        pass
    return resp


def build_app(server: "HttpServer") -> web.Application:
    from mesh.web import api
    app = web.Application(middlewares=[guard], client_max_size=1024 * 1024)
    app[SERVER_KEY] = server
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/csrf", csrf)
    app.router.add_get("/api/events", events)
    api.add_routes(app)
    return app
