"""What every format parser produces: the canonical text and its structure as blocks.

The text is what `parsed/{id}/v{n}/text.txt` stores and what every chunk's `char_start`/`char_end`
point into; blocks are spans of it, so structure never has to be re-read from the text by guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ragline.contracts import ContentType

from ..errors import EmptyDocument, ParseError


class BlockKind(StrEnum):
    HEADING = "heading"
    PARAGRAPH = "paragraph"
    LIST_ITEM = "list_item"
    TABLE = "table"
    CODE = "code"
    RECORD = "record"  # one CSV row or one JSON object, rendered as `key: value; key: value`


@dataclass(frozen=True, slots=True)
class Block:
    """`text[start:end]` of the parsed text; starts and ends on non-whitespace.

    - heading: `level` (1 = top) and `title` (the heading's words, without `#` marks)
    - table: `header_end` is where its header (header row and `|---|` line) ends, when it has one;
      the rows follow, one per line. The chunker repeats the header in every part of a split table.
    - page: 1-based page of the original (PDF), else None."""

    kind: BlockKind
    start: int
    end: int
    level: int = 0
    title: str | None = None
    page: int | None = None
    header_end: int | None = None


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    content_type: ContentType
    blocks: tuple[Block, ...] = ()

    def block_text(self, block: Block) -> str:
        return self.text[block.start : block.end]


@dataclass
class TextBuilder:
    """Appends rendered blocks to the canonical text and records their spans, so parsers of
    structured formats (PDF, DOCX, CSV, JSON) never compute offsets by hand."""

    content_type: ContentType
    _parts: list[str] = field(default_factory=list)
    _pos: int = 0
    _blocks: list[Block] = field(default_factory=list)

    def add(
        self,
        text: str,
        kind: BlockKind,
        *,
        separator: str = "\n\n",
        level: int = 0,
        title: str | None = None,
        page: int | None = None,
        header_chars: int | None = None,
    ) -> Block | None:
        """Append `text` (stripped; nothing when blank) after `separator`. `header_chars` is the
        length of a table's header within `text`."""
        stripped = text.strip()
        if not stripped:
            return None
        lead = len(text) - len(text.lstrip())
        if self._parts:
            self._parts.append(separator)
            self._pos += len(separator)
        start = self._pos
        self._parts.append(stripped)
        self._pos += len(stripped)
        header_end = None
        if header_chars is not None and 0 < header_chars - lead < len(stripped):
            header_end = start + header_chars - lead
        block = Block(kind, start, self._pos, level, title, page, header_end)
        self._blocks.append(block)
        return block

    @property
    def last(self) -> Block | None:
        return self._blocks[-1] if self._blocks else None

    def build(self) -> ParsedDocument:
        return ParsedDocument("".join(self._parts), self.content_type, tuple(self._blocks))


def decode_text(data: bytes) -> str:
    """Bytes of a text format as str with one newline convention (offsets then mean the same
    thing whoever wrote the file). UTF-8 only (a byte-order mark is dropped): guessing a legacy
    encoding turns arbitrary bytes into plausible text, so anything else is refused."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 at byte {exc.start}") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def require_text(parsed: ParsedDocument, what: str = "document has no text") -> ParsedDocument:
    if not parsed.blocks or not parsed.text.strip():
        raise EmptyDocument(what)
    return parsed
