"""The event catalogue (docs/events/): examples validate against the committed schemas, every public
event has one, and a schema change needs a new version (a breaking one, a new major)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import Field, create_model

from ragline.apidocs import write_docs
from ragline.contracts import (
    EVENT_TYPES,
    PUBLIC_EVENT_TYPES,
    DocumentFailed,
    DocumentIndexed,
    EventDetail,
    EventEnvelope,
    EventMetadata,
)
from ragline.eventcatalog import (
    breaking_changes,
    event_schema,
    example_path,
    frozen_path,
    schema_path,
    version_problems,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def committed(path: str) -> dict:
    return json.loads((DOCS / path).read_text())


@pytest.mark.parametrize("detail", PUBLIC_EVENT_TYPES, ids=lambda d: d.DETAIL_TYPE)
def test_every_public_event_has_an_example_valid_under_its_committed_schema(detail: type[EventDetail]):
    example = committed(example_path(detail))
    Draft202012Validator(committed(schema_path(detail))).validate(example)
    parsed = EventEnvelope[detail].model_validate(example)  # type: ignore[valid-type]
    assert parsed.detail.metadata.schema_version == detail.SCHEMA_VERSION


@pytest.mark.parametrize("detail", EVENT_TYPES, ids=lambda d: d.DETAIL_TYPE)
def test_an_example_of_another_event_does_not_validate(detail: type[EventDetail]):
    """The schemas pin detail-type and source: they can tell events apart."""
    other = next(d for d in PUBLIC_EVENT_TYPES if d is not detail)
    validator = Draft202012Validator(committed(schema_path(detail)))
    assert not validator.is_valid(committed(example_path(other)))


def test_every_event_is_frozen_at_its_version_and_breaks_none_of_its_major():
    assert version_problems(DOCS) == []


def test_events_are_stamped_with_their_own_schema_version():
    class Bumped(DocumentIndexed):
        SCHEMA_VERSION: ClassVar[str] = "1.1"

    metadata = EventMetadata(correlation_id="c", idempotency_key="k")
    event = Bumped(metadata=metadata, document_id="d", version=1, collection="c", indexed_count=1)
    assert event.metadata.schema_version == "1.1"
    assert event_schema(Bumped)["x-schema-version"] == "1.1"


# --------------------------------------------------------------------------------------------
# Changing an event: what the frozen versions catch
# --------------------------------------------------------------------------------------------


class Indexed(EventDetail):
    """A stand-in event, as first published."""

    SOURCE: ClassVar[str] = "ragline.index"
    DETAIL_TYPE: ClassVar[str] = "Indexed"

    document_id: str
    version: int
    stage: Literal["ingest", "index"] = "index"


def frozen(tmp_path: Path, *details: type[EventDetail]) -> Path:
    for detail in details:
        path = tmp_path / frozen_path(detail)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(event_schema(detail)))
    return tmp_path


def variant(schema_version: str, change: dict) -> type[EventDetail]:
    """`Indexed` changed: `change` maps a field to (annotation, default), or to None to remove it."""

    class Changed(EventDetail):
        SOURCE: ClassVar[str] = Indexed.SOURCE
        DETAIL_TYPE: ClassVar[str] = Indexed.DETAIL_TYPE
        SCHEMA_VERSION: ClassVar[str] = schema_version

    fields = {
        "document_id": (str, ...),
        "version": (int, ...),
        "stage": (Literal["ingest", "index"], "index"),
    }
    fields |= change
    return create_model("Indexed", __base__=Changed, **{k: v for k, v in fields.items() if v is not None})


BREAKING = {
    "a removed field": {"version": None},
    "a renamed field": {"version": None, "document_version": (int, ...)},
    "a changed type": {"version": (str, ...)},
    "a new required field": {"collection": (str, ...)},
    "a new enum value": {"stage": (Literal["ingest", "index", "notify"], "index")},
    "a field that became required": {"stage": (Literal["ingest", "index"], ...)},
}


@pytest.mark.parametrize("change", BREAKING.values(), ids=BREAKING.keys())
def test_a_breaking_change_fails_under_the_same_major_and_passes_as_a_new_one(tmp_path, change):
    docs = frozen(tmp_path, Indexed)
    assert version_problems(docs, (Indexed,)) == []

    same_major = variant("1.1", change)
    frozen(docs, same_major)  # even frozen (written by `ragline schemas`), 1.1 breaks 1.0
    problems = version_problems(docs, (same_major,))
    assert problems and all("breaks 1.0" in p for p in problems)

    new_major = variant("2.0", change)
    assert version_problems(frozen(docs, new_major), (new_major,)) == []


def test_an_additive_change_needs_a_new_minor_only(tmp_path):
    docs = frozen(tmp_path, Indexed)
    added = {"collection": (str | None, Field(default=None))}

    unbumped = variant("1.0", added)
    assert version_problems(docs, (unbumped,)) == [
        "Indexed 1.0: the model changed; give it a new SCHEMA_VERSION"
    ]

    minor = variant("1.1", added)
    assert version_problems(docs, (minor,)) == ["Indexed 1.1: not frozen yet (run `ragline schemas`)"]
    assert version_problems(frozen(docs, minor), (minor,)) == []


def test_a_changed_description_is_no_new_version(tmp_path):
    docs = frozen(tmp_path, Indexed)
    reworded = variant("1.0", {"version": (int, Field(description="reworded"))})
    assert version_problems(docs, (reworded,)) == []


def test_the_real_schemas_compare_clean_with_themselves_and_catch_a_removed_field():
    schema = event_schema(DocumentFailed)
    assert breaking_changes(schema, schema) == []
    smaller = json.loads(json.dumps(schema))
    del smaller["$defs"]["DocumentFailed"]["properties"]["code"]
    assert breaking_changes(schema, smaller) == ["$.detail.code: removed"]


def test_schemas_rewrites_current_schemas_but_never_a_frozen_version(tmp_path):
    write_docs(tmp_path)
    path = tmp_path / frozen_path(DocumentIndexed)
    edited = {**json.loads(path.read_text()), "x-note": "kept"}
    path.write_text(json.dumps(edited))
    write_docs(tmp_path)
    assert json.loads(path.read_text()) == edited
    assert write_docs(tmp_path, check=True) == []
