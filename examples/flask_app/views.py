from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from examples.flask_app import tasks

bp = Blueprint("tasks", __name__)


@bp.post("/add")
def add() -> dict[str, Any]:
    data = request.get_json(force=True)
    result = tasks.add.delay(int(data["a"]), int(data["b"]))
    return {"result_id": result.id}


@bp.post("/greet")
def greet() -> dict[str, Any]:
    result = tasks.greet.delay(str(request.get_json(force=True)["name"]))
    return {"result_id": result.id}


@bp.get("/result/<result_id>")
def result(result_id: str) -> dict[str, Any]:
    r = current_app.extensions["mesh"].AsyncResult(result_id)
    ready = r.ready()
    return {"ready": ready, "state": r.state,
            "value": r.get(timeout=1, propagate=False) if ready else None}
