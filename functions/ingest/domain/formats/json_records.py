"""JSON: records as rows, each `key.path: value; key.path: value` on one line.

An array: one record per element (an object is flattened to key paths; a scalar is itself). An
object: one record per top-level key, except that a key holding an array of objects gives one
record per element, its paths prefixed `key[i]`. Nested arrays of scalars are joined with `, `."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ragline.contracts import ContentType

from ..errors import CorruptDocument, EmptyDocument
from .base import BlockKind, ParsedDocument, TextBuilder, decode_text


def parse(data: bytes) -> ParsedDocument:
    try:
        value = json.loads(decode_text(data))
    except (ValueError, RecursionError) as exc:
        raise CorruptDocument(f"the JSON cannot be read: {exc}") from exc
    builder = TextBuilder(ContentType.JSON)
    for record in _records(value):
        builder.add(record, BlockKind.RECORD, separator="\n")
    if builder.last is None:
        raise EmptyDocument("the JSON has no values")
    return builder.build()


def _records(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield _record(item, "")
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
                for n, element in enumerate(item):
                    yield _record(element, f"{key}[{n}]")
            else:
                yield _record(item, str(key))
    else:
        yield _scalar(value)


def _record(value: Any, prefix: str) -> str:
    return "; ".join(f"{path}: {text}" if path else text for path, text in _flatten(value, prefix))


def _flatten(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        if all(not isinstance(i, (dict, list)) for i in value):
            if value:
                yield path, ", ".join(_scalar(i) for i in value)
        else:
            for n, item in enumerate(value):
                yield from _flatten(item, f"{path}[{n}]")
    else:
        yield path, _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return " ".join(value.split())
    return json.dumps(value)
