"""The Flask app's tasks: declared with ``shared_task`` (no import of the mesh app),
they run with the Flask app context, so ``current_app`` works."""
from __future__ import annotations

from flask import current_app

from mesh import shared_task


@shared_task
def add(a: int, b: int) -> int:
    return a + b


@shared_task(bind=True)
def greet(self, name: str) -> dict[str, str | None]:
    return {"text": f"{current_app.config['GREETING']}, {name}!",
            "flask_app": current_app.name, "node": self.request.hostname}
