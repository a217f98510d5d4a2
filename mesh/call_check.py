"""Celery's ``typing``: a task's call checked against its function's parameters when
it is sent (``Task.check_arguments``), by a generated function with the same
parameters that does nothing (Celery's ``head_from_fun``): calling it raises the
TypeError calling the task's function would, at a fraction of the cost of
``inspect.Signature.bind``. Built on a task's first send, never at import."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class _Default:
    def __repr__(self) -> str:
        return "_d"


def header_of(fun: Callable[..., Any], bound: bool) -> Callable[..., None]:
    """A function with ``fun``'s name and parameters (without its first, when
    ``bound``) that does nothing: called with a task's arguments, it raises the
    TypeError calling ``fun`` would (Celery's ``head_from_fun``). Cheaper than
    ``inspect.Signature.bind`` on every send."""
    try:
        sig = inspect.signature(fun)
    except (TypeError, ValueError):     # (a builtin without one): not checked
        return _no_check
    params = list(sig.parameters.values())
    if bound and params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                               inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    d, empty = _Default(), inspect.Parameter.empty
    plain = sig.replace(parameters=[p.replace(annotation=empty, default=empty if p.default
                                              is empty else d) for p in params],
                        return_annotation=empty)
    name = getattr(getattr(fun, "func", fun), "__name__", "")     # (a partial: run's)
    name = name if isinstance(name, str) and name.isidentifier() else "task"
    namespace: dict[str, Any] = {}
    exec(f"def {name}{plain}:\n    pass\n", {"_d": None}, namespace)   # noqa: S102
    check: Callable[..., None] = namespace[name]
    return check


def _no_check(*args: Any, **kwargs: Any) -> None:
    pass
