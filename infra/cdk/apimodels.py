"""Request bodies the gateway validates before a function runs: API Gateway models from the OpenAPI
document (docs/openapi.json, generated from the handlers' own pydantic models by ragline.apidocs and
checked for staleness by its tests).

API Gateway models are JSON Schema draft 4 and cannot `$ref` across a document, so each request
schema is made self-contained (references inlined) and said in draft 4: `const` becomes a one-value
`enum`, numeric `exclusiveMinimum`/`exclusiveMaximum` become `minimum`/`maximum` with the draft-4
boolean, and the keywords draft 4 lacks (`propertyNames`, `examples`) are dropped: the function's own
pydantic validation still applies them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
DRAFT4 = "http://json-schema.org/draft-04/schema#"
DROPPED = {"propertyNames", "examples", "$defs", "definitions"}
MAX_DEPTH = 32  # a request schema is a tree; deeper means a recursive model, which draft 4 models cannot be


@cache
def _document(path: Path = OPENAPI) -> dict[str, Any]:
    return json.loads(path.read_text())


def draft4(node: Any, schemas: dict[str, Any], depth: int = 0) -> Any:
    """`node` said in draft 4 (see the module docstring), `#/components/schemas/` references inlined
    from `schemas`; also what the Notify stack registers its event schemas with."""
    if depth > MAX_DEPTH:
        raise ValueError("request schema too deep (a recursive model?): API Gateway models cannot express it")
    if isinstance(node, list):
        return [draft4(item, schemas, depth + 1) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        return draft4({**schemas[name], **{k: v for k, v in node.items() if k != "$ref"}}, schemas, depth + 1)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key in ("properties", "patternProperties"):
            out[key] = {name: draft4(sub, schemas, depth + 1) for name, sub in value.items()}
        else:
            out[key] = draft4(value, schemas, depth + 1)
    return out


def request_schema(method: str, path: str, document: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The draft-4 schema of the JSON body of `method path`, or None when the route takes no body."""
    document = document or _document()
    operation = document["paths"].get(path, {}).get(method.lower())
    if operation is None:
        raise KeyError(f"{method} {path} is not in {OPENAPI.name}: regenerate it (ragline.apidocs)")
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is None:
        return None
    schemas = document.get("components", {}).get("schemas", {})
    schema = draft4(body["schema"], schemas)
    return {"$schema": DRAFT4, **schema}


def model_name(method: str, path: str, document: dict[str, Any] | None = None) -> str:
    """The component's name (e.g. SearchRequest): API Gateway model names are alphanumeric."""
    document = document or _document()
    ref = document["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
    return "".join(ch for ch in ref.get("$ref", f"{method}{path}").rsplit("/", 1)[-1] if ch.isalnum())
