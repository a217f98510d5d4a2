"""A Flask app that sends tasks to the mesh, laid out as Celery's Flask guide lays it
out: an app factory, ``mesh_init_app`` giving every task the Flask app context (a Task
base class), tasks declared with ``shared_task``.

Run it (from the repository root)::

    meshnode -A examples.flask_app.make_mesh          # a node, with the Flask app context
    MESH_PEERS=tcp://127.0.0.1:7700 flask --app examples.flask_app run
"""
from __future__ import annotations

from typing import Any

from flask import Flask

from mesh import Mesh, Task


def mesh_init_app(flask_app: Flask) -> Mesh:
    """The mesh app for ``flask_app``: its tasks run inside ``flask_app.app_context()``
    (on a node, and in eager mode), so they can use ``current_app``, its config and
    extensions (a database session, say)."""
    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with flask_app.app_context():
                return super().__call__(*args, **kwargs)

    app = Mesh(flask_app.name, task_cls=FlaskTask, peers=flask_app.config.get("MESH_PEERS"))
    app.conf.update(flask_app.config.get("MESH", {}))
    app.set_current()
    flask_app.extensions["mesh"] = app
    return app


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    flask_app = Flask(__name__)
    flask_app.config.from_mapping(
        GREETING="Hello",
        MESH_PEERS=None,          # None: MESH_PEERS from the environment, or mDNS
        MESH={"task_ignore_result": False},    # app.conf settings, Celery's names
    )
    if test_config:
        flask_app.config.from_mapping(test_config)
    mesh_init_app(flask_app)
    from examples.flask_app import views
    flask_app.register_blueprint(views.bp)
    return flask_app
