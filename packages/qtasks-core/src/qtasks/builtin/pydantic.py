"""Pydantic arguments and results, when the task's code uses pydantic (a built-in plugin).

A task whose parameters are annotated with pydantic models (or any type, with
``@app.task(validate=True)``) gets its arguments validated and converted before it runs. A model
parameter is built from a dict, a model, or — QTasks style — from the call's loose positional
and keyword arguments (``task("Test", value=42)`` for ``def task(item: Item)``). Invalid
arguments reject the run (status ``error``, not retried) before the function is called. Models
in arguments and results are stored as plain dicts.

Nothing here imports pydantic: it is used only if the application already imported it.
"""

from __future__ import annotations

import sys
from typing import Any

from qtasks.builtin.injection import type_hints, unannotated
from qtasks.hookspecs import hookimpl


@hookimpl
def qtasks_encode_value(value: Any) -> Any:
    if "pydantic" in sys.modules and isinstance(value, sys.modules["pydantic"].BaseModel):
        return value.model_dump(mode="json")
    return None


def _plan(spec: Any) -> tuple[dict[str, Any], tuple[str, Any] | None] | None:
    """TypeAdapters per parameter and the first model parameter with its model; None: nothing
    to validate."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:
        return None
    hints = {name: unannotated(hint) for name, hint in type_hints(spec.func).items()}
    hints.pop("return", None)
    models = [(n, h) for n, h in hints.items() if isinstance(h, type) and issubclass(h, pydantic.BaseModel)]
    if not models and not spec.extra.get("validate"):
        return None
    adapters = {}
    for name, hint in hints.items():
        try:
            adapters[name] = pydantic.TypeAdapter(hint)
        except Exception:  # a type pydantic cannot check (an injected service, ...): leave it alone
            continue
    return adapters, (models[0] if models else None)


def _fold(run: Any, params: list[str], name: str, model: Any) -> None:
    """QTasks call styles: build the model parameter from the call's loose fields."""
    index = params.index(name)
    given = run.kwargs.get(name, run.args[index] if index < len(run.args) else None)
    if isinstance(given, dict | model):
        return
    fields = list(model.model_fields)
    data = {key: run.kwargs.pop(key) for key in list(run.kwargs) if key in fields}
    missing = [f for f in fields if f not in data]
    loose = run.args[index : index + len(missing)]
    del run.args[index : index + len(missing)]
    data.update(zip(missing, loose, strict=False))
    run.kwargs[name] = data


@hookimpl
def qtasks_execution_context(run: Any) -> None:
    if run.task is None:
        return None
    if __name__ not in run.task.stash:
        run.task.stash[__name__] = _plan(run.task)
    plan = run.task.stash[__name__]
    if plan is None:
        return None
    adapters, model_param = plan
    echo = [None] if run.task.echo else []
    params = list(run.task.signature.parameters)[len(echo) :]
    if model_param is not None:
        _fold(run, params, *model_param)
    bound = run.task.signature.bind_partial(*echo, *run.args, **run.kwargs)
    for name, value in bound.arguments.items():
        if name in adapters:
            bound.arguments[name] = adapters[name].validate_python(value)
    run.args, run.kwargs = list(bound.args[len(echo) :]), dict(bound.kwargs)
