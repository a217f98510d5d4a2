# Celery's "Next Steps" guide (docs/getting-started/next-steps.rst), proj/celery.py
# verbatim except the import line. tests/integration/test_e2e_next_steps.py runs it.
from mesh import Mesh as Celery

app = Celery('proj',
             broker='amqp://',
             backend='rpc://',
             include=['proj.tasks'])

# Optional configuration, see the application user guide.
app.conf.update(
    result_expires=3600,
)

if __name__ == '__main__':
    app.start()
