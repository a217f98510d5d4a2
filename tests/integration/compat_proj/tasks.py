from .celery import app


@app.task
def mul(x: int, y: int) -> int:
    return x * y
