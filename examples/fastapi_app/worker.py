"""What a node imports: ``meshnode -A examples.fastapi_app.worker``. The tasks are
found by ``autodiscover_tasks`` with an explicit package list (no Django needed)."""
from mesh import Mesh

app = Mesh("fastapi-example")
app.autodiscover_tasks(["examples.fastapi_app"])
