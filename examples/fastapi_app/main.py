"""The API. The mesh client lives as long as the app: made in the lifespan (its I/O
thread started before the first request) and closed at shutdown. Handlers ``await``
results: the event loop keeps serving other requests meanwhile."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from examples.fastapi_app import tasks
from mesh import Mesh, states
from mesh.exceptions import TimeoutError as MeshTimeout

RESULT_TIMEOUT = 30.0


class Add(BaseModel):
    x: int
    y: int


class Reserve(BaseModel):
    item: str
    quantity: int


def create_api(peers: list[str] | None = None, eager: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        mesh = Mesh("fastapi-example", peers=peers or os.environ.get("MESH_PEERS"))
        mesh.conf.task_always_eager = eager
        if not eager:
            mesh.client       # noqa: B018  (connect now, not in the first request)
        api.state.mesh = mesh
        try:
            yield
        finally:
            mesh.close()

    api = FastAPI(lifespan=lifespan)

    @api.post("/add")
    async def add(body: Add) -> dict[str, Any]:
        r = tasks.add.delay(body.x, body.y)
        return {"result": await asyncio.wait_for(_awaitable(r), RESULT_TIMEOUT)}

    @api.post("/reserve")
    async def reserve(body: Reserve) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(_awaitable(tasks.reserve.delay(body.item, body.quantity)),
                                          RESULT_TIMEOUT)
        except tasks.OutOfStock as e:      # the task's own exception, raised by await
            raise HTTPException(status_code=409, detail=str(e)) from None

    @api.post("/jobs")
    async def start_job(seconds: float) -> dict[str, str]:
        return {"id": tasks.slow.delay(seconds).id}

    @api.get("/jobs/{job_id}")
    async def job(job_id: str, request: Request) -> dict[str, Any]:
        r = request.app.state.mesh.AsyncResult(job_id)
        state = await asyncio.to_thread(lambda: r.state)   # may ask the nodes: off the loop
        if state == "UNKNOWN":
            raise HTTPException(status_code=404, detail=f"no task {job_id}")
        done = state in states.READY_STATES
        return {"id": job_id, "state": state, "result": await r if done else None}

    return api


async def _awaitable(r: Any) -> Any:
    try:
        return await r
    except MeshTimeout as e:
        raise HTTPException(status_code=504, detail=str(e)) from None


api = create_api()
