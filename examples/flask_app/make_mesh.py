"""What a node imports: ``meshnode -A examples.flask_app.make_mesh``."""
from examples.flask_app import (
    create_app,
    tasks,  # noqa: F401  (declares the tasks)
)

flask_app = create_app()
app = flask_app.extensions["mesh"]
