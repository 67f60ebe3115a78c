"""The event catalogue: each event's JSON Schema (its EventBridge envelope), the frozen schema of each
version it was published in, and the compatibility rules between them (docs/events/README.md).

`ragline schemas` writes docs/events/<Event>.json for the current models and freezes
docs/events/versions/<Event>/<MAJOR.MINOR>.json the first time a version appears; it never rewrites a
frozen file. `version_problems` (run by the contract tests) then fails when a model changed without a new
version, or broke a consumer of its major version without a new major.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from ragline.contracts import EVENT_TYPES, DocumentFailed, EventDetail, EventEnvelope

# Words for humans: changing them is neither a new version nor a break.
_PROSE = {"title", "description", "examples"}


def sources(detail: type[EventDetail]) -> list[str]:
    """The envelope's possible `source`s: DocumentFailed's names the stage that failed."""
    if detail is DocumentFailed:
        return [f"ragline.{stage}" for stage in get_args(DocumentFailed.model_fields["stage"].annotation)]
    return [detail.SOURCE]


def event_schema(detail: type[EventDetail]) -> dict[str, Any]:
    schema = EventEnvelope[detail].model_json_schema(by_alias=True)  # type: ignore[valid-type]
    schema["title"] = detail.DETAIL_TYPE
    schema["description"] = (detail.__doc__ or "").strip()
    schema["x-source"] = detail.SOURCE
    schema["x-schema-version"] = detail.SCHEMA_VERSION
    schema["x-public"] = detail.PUBLIC
    # What EventBridge rules match on, pinned so an example or a capture of another event fails.
    schema["properties"]["detail-type"] = {"const": detail.DETAIL_TYPE, "type": "string"}
    schema["properties"]["source"] = {"enum": sources(detail), "type": "string"}
    return schema


def major(version: str) -> int:
    return int(version.split(".", 1)[0])


def schema_path(detail: type[EventDetail]) -> str:
    return f"events/{detail.DETAIL_TYPE}.json"


def frozen_path(detail: type[EventDetail], version: str | None = None) -> str:
    return f"events/versions/{detail.DETAIL_TYPE}/{version or detail.SCHEMA_VERSION}.json"


def example_path(detail: type[EventDetail]) -> str:
    return f"events/examples/{detail.DETAIL_TYPE}/v{major(detail.SCHEMA_VERSION)}.json"


# --------------------------------------------------------------------------------------------
# Compatibility: can a consumer written against `old` read what `new` describes?
# --------------------------------------------------------------------------------------------


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every local `$ref` replaced by its target (pydantic's schemas have no cycles)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = walk(defs[node["$ref"].rsplit("/", 1)[-1]])
                return {**target, **{k: walk(v) for k, v in node.items() if k != "$ref"}}
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def without_prose(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_prose(v) for k, v in node.items() if k not in _PROSE}
    if isinstance(node, list):
        return [without_prose(v) for v in node]
    return node


def _branches(node: dict[str, Any]) -> list[dict[str, Any]]:
    return node.get("anyOf", [node])


def _kind(node: dict[str, Any]) -> str:
    if "const" in node or "enum" in node:
        return "enum"
    return str(node.get("type", "any"))


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a consumer of `old` could not read in events valid under `new`: a removed (or renamed)
    field, a field that became required, a changed type or format, a value outside the old enum.
    Adding an optional field is not a break: consumers ignore fields they do not know."""
    return _changes(resolve(old), resolve(new), "$")


def _changes(old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
    """breaking_changes below `path`, in schemas whose $refs are resolved."""
    problems: list[str] = []
    old_branches, new_branches = _branches(old), _branches(new)
    for branch in new_branches:
        matches = [b for b in old_branches if _kind(b) == _kind(branch)]
        if not matches and not any(_kind(b) == "any" for b in old_branches):
            problems.append(f"{path}: type {_kind(branch)} is new (was {[_kind(b) for b in old_branches]})")
            continue
        if not matches:
            continue
        previous = matches[0]
        if _kind(branch) == "enum":
            old_values = set(map(json.dumps, previous.get("enum", [previous.get("const")])))
            new_values = set(map(json.dumps, branch.get("enum", [branch.get("const")])))
            if added := new_values - old_values:
                problems.append(f"{path}: values {sorted(added)} are new")
        if previous.get("format") != branch.get("format"):
            problems.append(f"{path}: format {previous.get('format')} became {branch.get('format')}")
        old_props, new_props = previous.get("properties", {}), branch.get("properties", {})
        for name, schema in old_props.items():
            if name not in new_props:
                problems.append(f"{path}.{name}: removed")
            else:
                problems += _changes(schema, new_props[name], f"{path}.{name}")
        for name in sorted(set(branch.get("required", [])) - set(previous.get("required", []))):
            problems.append(f"{path}.{name}: required now")
        if "items" in previous and "items" in branch:
            problems += _changes(previous["items"], branch["items"], f"{path}[]")
        old_extra, new_extra = previous.get("additionalProperties"), branch.get("additionalProperties")
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            problems += _changes(old_extra, new_extra, f"{path}{{}}")
    return problems


def version_problems(docs: Path, events: tuple[type[EventDetail], ...] = EVENT_TYPES) -> list[str]:
    """Against the frozen schemas in `docs`: a model that changed under its current version (bump
    the minor), or that breaks a version of its major (bump the major)."""
    problems = []
    for detail in events:
        current = event_schema(detail)
        frozen_dir = docs / frozen_path(detail).rsplit("/", 1)[0]
        frozen = {p.stem: json.loads(p.read_text()) for p in sorted(frozen_dir.glob("*.json"))}
        name, version = detail.DETAIL_TYPE, detail.SCHEMA_VERSION
        if version not in frozen:
            problems.append(f"{name} {version}: not frozen yet (run `ragline schemas`)")
        elif without_prose(resolve(frozen[version])) != without_prose(resolve(current)):
            problems.append(f"{name} {version}: the model changed; give it a new SCHEMA_VERSION")
        for old_version, old in frozen.items():
            if major(old_version) != major(version):
                continue
            problems += [
                f"{name} {version} breaks {old_version} (give it a new major version): {change}"
                for change in breaking_changes(old, current)
            ]
    return problems


def event_schemas() -> dict[str, dict[str, Any]]:
    """Each event's current schema, by its path under docs/."""
    return {schema_path(detail): event_schema(detail) for detail in EVENT_TYPES}


def catalogue_files(docs: Path) -> dict[str, dict[str, Any]]:
    """Schemas to write every time, and frozen versions to write only when they are missing."""
    files = event_schemas()
    # The frozen file shares the current schema's dict: the files are only serialized, never changed.
    files |= {
        frozen_path(d): files[schema_path(d)] for d in EVENT_TYPES if not (docs / frozen_path(d)).exists()
    }
    return files
