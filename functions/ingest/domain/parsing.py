"""Turn stored bytes into the parsed text that chunk offsets point into.

Parsers are looked up by content type; an unsupported type is a typed error, not a crash.
Markdown keeps its source text: the chunker reads its structure (headings, fences, tables)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ragline.contracts import ContentType

from .errors import EmptyDocument, ParseError


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    content_type: ContentType


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")  # tolerates (and drops) a byte-order mark
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 at byte {exc.start}") from exc
    # One newline convention, so offsets mean the same thing whoever wrote the file.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _plain_text(data: bytes) -> str:
    return _decode(data)


def _markdown(data: bytes) -> str:
    return _decode(data)


_PARSERS: dict[ContentType, Callable[[bytes], str]] = {
    ContentType.TEXT: _plain_text,
    ContentType.MARKDOWN: _markdown,
}


def parse(data: bytes, content_type: ContentType | str) -> ParsedDocument:
    try:
        kind = ContentType(content_type)
    except ValueError as exc:
        raise ParseError(f"unsupported content type {content_type!r}") from exc
    text = _PARSERS[kind](data)
    if not text.strip():
        raise EmptyDocument("document has no text")
    return ParsedDocument(text=text, content_type=kind)
