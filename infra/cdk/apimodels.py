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

from ragline.eventcatalog import resolve

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
DRAFT4 = "http://json-schema.org/draft-04/schema#"
DROPPED = {"propertyNames", "examples", "$defs", "definitions"}
MAX_DEPTH = 32  # a request schema is a tree; deeper means a recursive model, which draft 4 models cannot be
TOO_DEEP = "request schema too deep (a recursive model?): API Gateway models cannot express it"


@cache
def _document(path: Path = OPENAPI) -> dict[str, Any]:
    return json.loads(path.read_text())


def draft4_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` self-contained (its `$defs` references inlined) and said in draft 4; also what the
    Notify stack registers its event schemas with."""
    try:
        resolved = resolve(schema)
    except RecursionError:  # a recursive model never stops inlining
        raise ValueError(TOO_DEEP) from None
    return {"$schema": DRAFT4, **draft4(resolved)}


def draft4(node: Any, depth: int = 0) -> Any:
    """`node`, already self-contained, said in draft 4 (see the module docstring)."""
    if depth > MAX_DEPTH:
        raise ValueError(TOO_DEEP)
    if isinstance(node, list):
        return [draft4(item, depth + 1) for item in node]
    if not isinstance(node, dict):
        return node
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
            out[key] = {name: draft4(sub, depth + 1) for name, sub in value.items()}
        else:
            out[key] = draft4(value, depth + 1)
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
    # The components as the body's `$defs`, so that its `#/components/schemas/` references resolve.
    return draft4_schema({**body["schema"], "$defs": document.get("components", {}).get("schemas", {})})


def model_name(method: str, path: str, document: dict[str, Any] | None = None) -> str:
    """The component's name (e.g. SearchRequest): API Gateway model names are alphanumeric."""
    document = document or _document()
    ref = document["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
    return "".join(ch for ch in ref.get("$ref", f"{method}{path}").rsplit("/", 1)[-1] if ch.isalnum())
