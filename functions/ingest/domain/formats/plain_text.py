"""Plain text: paragraphs are runs of non-blank lines; Markdown marks mean nothing here."""

from __future__ import annotations

from ragline.contracts import ContentType

from .base import Block, BlockKind, ParsedDocument, decode_text
from .markdown import lines, trim


def parse(data: bytes) -> ParsedDocument:
    return parse_text(decode_text(data))


def parse_text(text: str) -> ParsedDocument:
    return ParsedDocument(text, ContentType.TEXT, tuple(paragraph_blocks(text)))


def paragraph_blocks(text: str, *, page: int | None = None) -> list[Block]:
    spans = lines(text)
    blocks: list[Block] = []
    i = 0
    while i < len(spans):
        if not text[spans[i][0] : spans[i][1]].strip():
            i += 1
            continue
        j = i
        while j + 1 < len(spans) and text[spans[j + 1][0] : spans[j + 1][1]].strip():
            j += 1
        span = trim(text, spans[i][0], spans[j][1])
        if span:
            blocks.append(Block(BlockKind.PARAGRAPH, span[0], span[1], page=page))
        i = j + 1
    return blocks
