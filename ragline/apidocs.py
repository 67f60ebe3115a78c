"""Exports the contracts to docs/: a JSON Schema per event and stored record, and one OpenAPI
document for the whole HTTP API, generated from the handlers' own routers (Powertools resolvers and
the FastAPI answers app), so the document describes what is served, not a copy of it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ragline.contracts import EVENT_TYPES, Chunk, Document, EventEnvelope
from ragline.topology import TOPOLOGY

TITLE = "Ragline API"
VERSION = "1.0"


def event_schemas() -> dict[str, dict[str, Any]]:
    schemas = {}
    for detail in EVENT_TYPES:
        schema = EventEnvelope[detail].model_json_schema(by_alias=True)  # type: ignore[valid-type]
        schema["title"] = detail.DETAIL_TYPE
        schema["description"] = (detail.__doc__ or "").strip()
        schema["x-source"] = detail.SOURCE
        schemas[f"events/{detail.DETAIL_TYPE}.json"] = schema
    return schemas


def record_schemas() -> dict[str, dict[str, Any]]:
    return {f"schemas/{model.__name__}.json": model.model_json_schema() for model in (Document, Chunk)}


def _router_openapi(handler: str) -> dict[str, Any]:
    """The OpenAPI of the router behind a topology function: `app` in the handler's module."""
    module_name, sep, attribute = handler.partition(":")
    if not sep:
        module_name, attribute = handler.rpartition(".")[0], "app"
    app = getattr(importlib.import_module(module_name), attribute)
    if hasattr(app, "get_openapi_json_schema"):  # Powertools resolver
        return json.loads(app.get_openapi_json_schema(title=TITLE, version=VERSION))
    return app.openapi()  # FastAPI


def openapi() -> dict[str, Any]:
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": {},
        "components": {
            "schemas": {},
            "securitySchemes": {
                "cognito": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A Cognito ID token (locally: `ragline token`); `cognito:groups` decides visibility.",
                }
            },
        },
        "security": [{"cognito": []}],
    }
    for spec in TOPOLOGY.functions:
        if not spec.routes:
            continue
        part = _router_openapi(spec.handler)
        routed = {route.path for route in spec.routes}
        document["paths"].update(
            {path: item for path, item in part.get("paths", {}).items() if path in routed}
        )
        document["components"]["schemas"].update(part.get("components", {}).get("schemas", {}))
    document["paths"] = dict(sorted(document["paths"].items()))
    document["components"]["schemas"] = dict(sorted(document["components"]["schemas"].items()))
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def write_docs(out: Path, *, check: bool = False) -> list[Path]:
    """Writes every file (or, with check, only reports those that differ); returns the stale ones."""
    files = {**event_schemas(), **record_schemas(), "openapi.json": openapi()}
    stale = []
    for name, document in files.items():
        path = out / name
        text = render(document)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return stale if check else []
