"""``Task.delay_on_commit`` and ``apply_async_on_commit``: Django's on_commit."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.exceptions import ConfigError


def on_commit(fn: Callable[[], Any], using: str | None = None) -> None:
    """Run ``fn`` when the transaction on ``using`` commits (now, outside one)."""
    try:
        from django.db import transaction
    except ImportError as e:
        raise ConfigError("delay_on_commit/apply_async_on_commit need Django "
                          "(pip install django); use delay/apply_async") from e
    transaction.on_commit(fn, using=using)
