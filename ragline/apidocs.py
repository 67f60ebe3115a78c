"""Exports the contracts to docs/: a JSON Schema per event and stored record, and one OpenAPI
document for the whole HTTP API, generated from the handlers' own routers (Powertools resolvers and
the FastAPI answers app), so the document describes what is served, not a copy of it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ragline.contracts import Chunk, Document
from ragline.eventcatalog import catalogue_files
from ragline.eventcatalog import event_schemas as event_schemas  # re-exported: the drift test reads it here
from ragline.topology import SCOPES, TOPOLOGY, oauth_scope

# What each scope lets a token do (the Cognito resource server's scopes, ragline.topology.SCOPES).
SCOPE_DESCRIPTIONS = {
    "documents:read": "read documents, collections and operations",
    "documents:write": "upload, update and delete documents; create collections",
    "search": "search",
    "answers": "ask for answers and read one's conversations",
    "subscriptions": "manage webhook and email subscriptions",
}
TITLE = "Ragline API"
VERSION = "1.0"


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
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A Cognito access token whose `scope` grants the operation's scope "
                    "(locally: `ragline token`); its `cognito:groups` and `custom:tenant` decide what the "
                    "caller sees.",
                },
                "clientCredentials": {
                    "type": "oauth2",
                    "description": "Machine clients: the client-credentials grant at the Cognito domain's "
                    "token endpoint (locally: `ragline client`, then POST /oauth2/token); the token's "
                    "`ragline:groups` and `custom:tenant` (the client's configured groups and tenant) "
                    "decide what it sees.",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": "/oauth2/token",
                            "scopes": {oauth_scope(s): SCOPE_DESCRIPTIONS[s] for s in SCOPES},
                        }
                    },
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "The key of a usage plan (a tier): required by the deployed API, "
                    "optional locally unless `ragline dev --require-api-key`.",
                },
            },
        },
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
    scopes = TOPOLOGY.route_scopes()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            scope = oauth_scope(scopes[(method.upper(), path)])
            operation["security"] = [
                {"bearer": [scope], "apiKey": []},
                {"clientCredentials": [scope], "apiKey": []},
            ]
    document["paths"] = dict(sorted(document["paths"].items()))
    document["components"]["schemas"] = dict(sorted(document["components"]["schemas"].items()))
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def write_docs(out: Path, *, check: bool = False) -> list[Path]:
    """Writes every file (or, with check, only reports those that differ); returns the stale ones."""
    # Frozen event versions (docs/events/versions/) are written once and never rewritten.
    files = {**catalogue_files(out), **record_schemas(), "openapi.json": openapi()}
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
