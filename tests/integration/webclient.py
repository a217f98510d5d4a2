"""A small HTTP client for the dashboard tests: cookies kept, CSRF header sent on POST."""
from __future__ import annotations

import http.cookiejar
import json
import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


class Web:
    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, csrf: bool = True) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if method == "POST" and csrf:
            req.add_header("X-CSRF-Token", self.csrf())
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with self.opener.open(req, timeout=30) as resp:
                raw, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raw, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(raw)
        return status, raw.decode()

    def get(self, path: str, **kw: Any) -> Any:
        status, body = self.request("GET", path, **kw)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        status, out = self.request("POST", path, body, **kw)
        assert status == 200, f"POST {path}: {status} {out}"
        return out

    def csrf(self) -> str:
        for c in self.jar:
            if c.name == "mesh_csrf":
                return str(c.value)
        return str(self.get("/api/csrf")["token"])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """sample name + sorted labels -> value."""
        out = {}
        for fam in text_string_to_metric_families(self.get("/metrics")):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def metric_sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /,
               **labels: str) -> float:
    return sum(v for (n, lv), v in samples.items()
               if n == metric and all((k, val) in lv for k, val in labels.items()))


def all_tasks(web: Web, **filters: Any) -> list[dict[str, Any]]:
    """Every task the mesh lists for a filter, following cursors."""
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        q = "&".join(f"{k}={v}" for k, v in {**filters, "limit": 100}.items())
        page = web.get("/api/mesh/tasks?" + q + (f"&cursor={cursor}" if cursor else ""))
        assert not page["errors"], page["errors"]
        out += page["tasks"]
        cursor = page["cursor"]
        if cursor is None:
            return out
    raise AssertionError("cursor never ended")


def wait_for(fn: Any, timeout: float = 30.0, what: Any = "a condition") -> Any:
    """``what``: a text, or a function giving it at the timeout (what was seen last)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out waiting for {said} (last: {v!r})")
        time.sleep(0.1)
