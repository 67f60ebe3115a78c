"""Turn stored bytes into the parsed text that chunk offsets point into, with its structure.

The type is detected from the bytes (`detect.detect_content_type`) and checked against the declared
one, then the parser for that type (one module per format under `formats/`) reads it. Every parser
returns a `ParsedDocument`: the canonical text (stored as `text.txt`) and its blocks (headings,
paragraphs, list items, tables, code, records) as spans of that text, with heading levels and, for
PDF, page numbers. Failures are typed (`errors.py`): unsupported or mismatched type, encrypted,
corrupt, empty, too large; all are permanent, so the worker fails the document instead of retrying.

Parsers (all permissively licensed, none AGPL): pypdf (BSD-3-Clause), python-docx (MIT),
trafilatura (Apache-2.0); CSV and JSON by the standard library. Text formats must be UTF-8."""

from __future__ import annotations

from collections.abc import Callable

from ragline.contracts import ContentType

from .detect import detect_content_type
from .errors import ParsedDocumentTooLarge, UnsupportedContentType
from .formats import csv_records, docx_document, html_page, json_records, markdown, pdf, plain_text
from .formats.base import Block, BlockKind, ParsedDocument, require_text

__all__ = ["MAX_PARSE_BYTES", "Block", "BlockKind", "ParsedDocument", "parse"]

# The worker's own ceiling, whatever the upload path allowed: parsing more than this in one Lambda
# invocation would run out of memory or time before it ran out of bytes.
MAX_PARSE_BYTES = 100 * 1024 * 1024

_PARSERS: dict[ContentType, Callable[[bytes], ParsedDocument]] = {
    ContentType.TEXT: plain_text.parse,
    ContentType.MARKDOWN: markdown.parse,
    ContentType.HTML: html_page.parse,
    ContentType.PDF: pdf.parse,
    ContentType.DOCX: docx_document.parse,
    ContentType.CSV: csv_records.parse,
    ContentType.JSON: json_records.parse,
}


def parse(
    data: bytes, content_type: ContentType | str | None, *, max_bytes: int = MAX_PARSE_BYTES
) -> ParsedDocument:
    """Parse `data`, declared as `content_type` (None: detect it). Raises a ParseError subclass."""
    if len(data) > max_bytes:
        raise ParsedDocumentTooLarge("the document", len(data), max_bytes)
    declared = _content_type(content_type)
    kind = detect_content_type(data, declared)
    return require_text(_PARSERS[kind](data))


def _content_type(value: ContentType | str | None) -> ContentType | None:
    if value is None or isinstance(value, ContentType):
        return value
    try:
        return ContentType(value.split(";", 1)[0].strip().lower())
    except ValueError:
        raise UnsupportedContentType(f"unsupported content type {value!r}") from None
