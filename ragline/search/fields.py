"""Filterable metadata: which document metadata fields can be filtered on, and as what type.

A document's metadata may hold any keys; only the fields the deployment declares
(`RAGLINE_METADATA_FIELDS`, e.g. `{"year": "number", "published": "date", "team": "keyword"}`) are
indexed for filtering, each with its own type, so a number range compares numbers and a date range
compares instants. Declaring fields up front, like Azure AI Search's `filterable` attribute or an
OpenSearch `strict` mapping, keeps the index mapping bounded (user-invented keys can never grow it
without limit) and lets a filter on a misspelt field fail with a 422 instead of silently matching
nothing.

Ingest checks a document's declared fields when it is created (`document_errors`), the index
adapters write the typed values (`typed`), and retrieve turns a request's filters into engine-neutral
conditions (`conditions`). One class, so the three can never disagree on what a type accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from ragline.contracts import (
    FilterableFieldType,
    InFilter,
    MetadataFilter,
    MetadataValue,
    RangeFilter,
)

TypedValue = str | float | bool | datetime


class InvalidFilter(ValueError):
    """A search filter the declared fields cannot answer (HTTP 422)."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


@dataclass(frozen=True)
class MatchAny:
    """The field holds one of `values` (typed: str, float, bool or an aware datetime)."""

    field: str
    type: FilterableFieldType
    values: tuple[TypedValue, ...]


@dataclass(frozen=True)
class Range:
    """The field lies within the bounds that are set (numbers or aware datetimes)."""

    field: str
    type: FilterableFieldType
    gt: float | datetime | None = None
    gte: float | datetime | None = None
    lt: float | datetime | None = None
    lte: float | datetime | None = None


Condition = MatchAny | Range


def parse_date(value: Any) -> datetime | None:
    """An ISO 8601 date or date-time as an aware UTC datetime; None if it is not one.
    A date means its midnight UTC; a date-time without an offset is taken as UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _typed(kind: FilterableFieldType, value: Any) -> TypedValue | None:
    """`value` as the field's type, or None when it is not of that type (bools are not numbers)."""
    if kind is FilterableFieldType.KEYWORD:
        return value if isinstance(value, str) else None
    if kind is FilterableFieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)
    if kind is FilterableFieldType.DATE:
        return parse_date(value)
    return value if isinstance(value, bool) else None


_EXPECTED = {
    FilterableFieldType.KEYWORD: "a string",
    FilterableFieldType.NUMBER: "a number",
    FilterableFieldType.DATE: "an ISO 8601 date or date-time string",
    FilterableFieldType.BOOLEAN: "true or false",
}


class FilterableFields:
    def __init__(self, fields: Mapping[str, FilterableFieldType | str]) -> None:
        self._fields = {name: FilterableFieldType(kind) for name, kind in fields.items()}

    def __bool__(self) -> bool:
        return bool(self._fields)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._fields.items())

    def document_errors(self, metadata: Mapping[str, MetadataValue]) -> list[str]:
        """What is wrong with a document's declared fields (undeclared keys are stored, never checked)."""
        return [
            f"metadata.{name} must be {_EXPECTED[kind]}, got {metadata[name]!r}"
            for name, kind in self._fields.items()
            if name in metadata and _typed(kind, metadata[name]) is None
        ]

    def typed(self, metadata: Mapping[str, MetadataValue]) -> dict[str, TypedValue]:
        """The declared fields a document has, as their types (values of the wrong type are left out:
        a document created before a field was declared must still index)."""
        out: dict[str, TypedValue] = {}
        for name, kind in self._fields.items():
            if name in metadata and (value := _typed(kind, metadata[name])) is not None:
                out[name] = value
        return out

    def conditions(self, filters: Mapping[str, MetadataFilter]) -> tuple[Condition, ...]:
        """A request's filters as typed conditions, in field order; raises InvalidFilter."""
        return tuple(self._condition(name, filters[name]) for name in sorted(filters))

    def _condition(self, name: str, spec: MetadataFilter) -> Condition:
        kind = self._fields.get(name)
        if kind is None:
            declared = ", ".join(sorted(self._fields)) or "none are declared"
            raise InvalidFilter(
                "unknown_filter_field",
                name,
                f"metadata.{name} is not a filterable field (filterable: {declared}; "
                "declare fields with RAGLINE_METADATA_FIELDS)",
            )
        if isinstance(spec, RangeFilter):
            if kind not in (FilterableFieldType.NUMBER, FilterableFieldType.DATE):
                raise InvalidFilter(
                    "invalid_filter", name, f"metadata.{name} is a {kind} field; ranges need a number or date"
                )
            bounds = {op: getattr(spec, op) for op in ("gt", "gte", "lt", "lte")}
            typed = {op: self._value(name, kind, value) for op, value in bounds.items() if value is not None}
            return Range(name, kind, **typed)  # type: ignore[arg-type]
        values = spec.in_ if isinstance(spec, InFilter) else [spec]
        typed_values = tuple(dict.fromkeys(self._value(name, kind, value) for value in values))
        return MatchAny(name, kind, typed_values)

    @staticmethod
    def _value(name: str, kind: FilterableFieldType, value: Any) -> TypedValue:
        typed = _typed(kind, value)
        if typed is None:
            raise InvalidFilter(
                "invalid_filter",
                name,
                f"metadata.{name} is a {kind} field: expected {_EXPECTED[kind]}, got {value!r}",
            )
        return typed
