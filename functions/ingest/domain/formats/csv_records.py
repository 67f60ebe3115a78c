"""CSV: one record per row, `column: value; column: value`, so every chunk carries the column
names of the values in it (a chunk of bare rows would not say what its numbers are).

The dialect (comma, semicolon, tab) is sniffed; the first row is the header. Empty values are left
out of a record; a row longer than the header names its extra values `column N`."""

from __future__ import annotations

import csv
import io

from ragline.contracts import ContentType

from ..errors import CorruptDocument, EmptyDocument
from .base import BlockKind, ParsedDocument, TextBuilder, decode_text

csv.field_size_limit(16 * 1024 * 1024)


def parse(data: bytes) -> ParsedDocument:
    text = decode_text(data)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[: 64 * 1024], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = csv.reader(io.StringIO(text), dialect)
        header = [_clean(name) for name in next(rows, [])]
        builder = TextBuilder(ContentType.CSV)
        for row in rows:
            fields = [
                f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {_clean(value)}"
                for i, value in enumerate(row)
                if value.strip()
            ]
            builder.add("; ".join(fields), BlockKind.RECORD, separator="\n")
    except csv.Error as exc:
        raise CorruptDocument(f"the CSV cannot be read: {exc}") from exc
    if builder.last is None:
        raise EmptyDocument("the CSV has no rows under its header")
    return builder.build()


def _clean(value: str) -> str:
    return " ".join(value.split())
