"""Request bodies in /openapi.json for the routes that read their JSON themselves.

The OpenAI and Ollama routes parse the raw body (`read_json_object`) to give errors in their
protocol's own shape, so FastAPI does not know their schemas. Without them /docs shows no
body and the fuzz test (tests/test_schemathesis.py) could not send one that gets past parsing.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

_REF = "#/components/schemas/{model}"
_bodies: dict[str, type[BaseModel]] = {}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is `model`; `add_body_schemas` adds the schema."""
    _bodies[model.__name__] = model
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_body_schemas(app: FastAPI) -> None:
    """Put the bodies' schemas (and the models they use) into the app's components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _bodies.items():
            schema = model.model_json_schema(ref_template=_REF)
            for part, definition in [*schema.pop("$defs", {}).items(), (name, schema)]:
                if not _same_model(components.setdefault(part, definition), definition):
                    # Two models of one name: a $ref would silently point at the wrong one.
                    raise RuntimeError(f"two request schemas are named {part!r}")
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """By their fields: FastAPI renders a model it already lists (a body of /v1/jobs used here
    too) with small differences of its own (`minimum: 1.0`, no `default: null`)."""
    return a.get("title") == b.get("title") and set(a.get("properties", {})) == set(
        b.get("properties", {})
    )
