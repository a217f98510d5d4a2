# Celery's "First Steps with Celery" tutorial (docs/getting-started/first-steps-with-celery.rst),
# verbatim except the import line: the tasks module, in its final form (with results and
# the configuration module). tests/integration/test_e2e_tutorial.py runs it on real nodes.
from mesh import Mesh as Celery

app = Celery('tasks', backend='rpc://', broker='pyamqp://')
app.config_from_object('celeryconfig')

@app.task
def add(x, y):
    return x + y
