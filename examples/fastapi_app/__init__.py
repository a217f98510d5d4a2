"""A FastAPI app that sends tasks to the mesh and awaits their results.

Run it (from the repository root)::

    meshnode -A examples.fastapi_app.worker
    MESH_PEERS=tcp://127.0.0.1:7700 uvicorn examples.fastapi_app.main:api
"""
