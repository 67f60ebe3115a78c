"""Markdown (and the Markdown that HTML and DOCX are rendered to): the source text is kept as is;
blocks are read from it.

ATX headings (`#` .. `######`, not inside fenced code), fenced code blocks (an unclosed fence runs
to the end), tables (runs of lines starting with `|`; the header is the first row when a `|---|`
line follows it), list items and paragraphs (runs of non-blank lines)."""

from __future__ import annotations

import re

from ragline.contracts import ContentType

from .base import Block, BlockKind, ParsedDocument, decode_text

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_TABLE_ROW = re.compile(r"^ {0,3}\|")
_TABLE_RULE = re.compile(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")


def parse(data: bytes) -> ParsedDocument:
    return parse_text(decode_text(data))


def parse_text(text: str, content_type: ContentType = ContentType.MARKDOWN) -> ParsedDocument:
    return ParsedDocument(text, content_type, tuple(markdown_blocks(text)))


def lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, newline excluded."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


def trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    segment = text[start:end]
    stripped = segment.lstrip()
    if not stripped:
        return None
    s = start + len(segment) - len(stripped)
    return s, s + len(stripped.rstrip())


def _closes(line: str, fence: str) -> bool:
    m = _FENCE.match(line)
    return bool(
        m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line[m.end() :].strip()
    )


def _starts_block(line: str) -> bool:
    return bool(
        _FENCE.match(line) or _HEADING.match(line) or _TABLE_ROW.match(line) or _LIST_ITEM.match(line)
    )


def markdown_blocks(text: str, *, page: int | None = None) -> list[Block]:
    spans = lines(text)
    blocks: list[Block] = []

    def line(i: int) -> str:
        return text[spans[i][0] : spans[i][1]]

    def add(
        first: int,
        last: int,
        kind: BlockKind,
        *,
        level: int = 0,
        title: str | None = None,
        header_end: int | None = None,
    ) -> None:
        span = trim(text, spans[first][0], spans[last][1])
        if span:
            blocks.append(Block(kind, span[0], span[1], level, title, page, header_end))

    i = 0
    while i < len(spans):
        current = line(i)
        if not current.strip():
            i += 1
            continue
        if m := _FENCE.match(current):
            j = i + 1
            while j < len(spans) and not _closes(line(j), m.group(1)):
                j += 1
            last = min(j, len(spans) - 1)
            add(i, last, BlockKind.CODE)
            i = last + 1
            continue
        if m := _HEADING.match(current):
            add(i, i, BlockKind.HEADING, level=len(m.group(1)), title=(m.group(2) or "").strip())
            i += 1
            continue
        if _TABLE_ROW.match(current):
            j = i
            while j + 1 < len(spans) and _TABLE_ROW.match(line(j + 1)):
                j += 1
            header_end = spans[i + 1][1] if j > i + 1 and _TABLE_RULE.match(line(i + 1)) else None
            add(i, j, BlockKind.TABLE, header_end=header_end)
            i = j + 1
            continue
        kind = BlockKind.LIST_ITEM if _LIST_ITEM.match(current) else BlockKind.PARAGRAPH
        j = i
        while j + 1 < len(spans):
            nxt = line(j + 1)
            if not nxt.strip() or _starts_block(nxt):
                break
            j += 1
        add(i, j, kind)
        i = j + 1
    return blocks
