"""PDF: the text layer of each page, with its page number; headings from the outline (bookmarks).

pypdf (BSD) reads the text layer; there is no OCR, so a scan has no text and is an EmptyDocument.
The parsed text is the pages' text in order, separated by a blank line; every block carries its
page, so a chunk knows the page it starts on. A line that is an outline entry's title on the page
the entry points at is a heading at the entry's depth; other lines form paragraphs (runs of
non-blank lines, also ended by a short line that ends a sentence). A password-protected PDF is readable only when its user password is empty."""

from __future__ import annotations

import io
import logging
from typing import Any

from ragline.contracts import ContentType

from ..errors import CorruptDocument, EmptyDocument, EncryptedDocument
from .base import Block, BlockKind, ParsedDocument
from .markdown import trim


def parse(data: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns on every damaged xref it repairs
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _decrypts_without_password(reader):
            raise EncryptedDocument("the PDF is password-protected")
        pages = [page.extract_text() or "" for page in reader.pages]
        headings = _outline_headings(reader)
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        # pypdf reports damage as any of these, depending on where the bytes stop making sense.
        raise CorruptDocument(f"the PDF cannot be read: {exc}") from exc
    except RecursionError as exc:
        raise CorruptDocument("the PDF's object graph is circular") from exc

    parts: list[str] = []
    blocks: list[Block] = []
    pos = 0
    for number, raw in enumerate(pages, start=1):
        text = "\n".join(line.rstrip() for line in raw.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
        text = text.replace("\x00", "").strip()
        if not text:
            continue
        if parts:
            parts.append("\n\n")
            pos += 2
        blocks.extend(_page_blocks(text, pos, number, headings.get(number, {})))
        parts.append(text)
        pos += len(text)
    if not blocks:
        raise EmptyDocument("the PDF has no text layer (a scanned document?); OCR is not supported")
    return ParsedDocument("".join(parts), ContentType.PDF, tuple(blocks))


def _decrypts_without_password(reader: Any) -> bool:
    try:
        return bool(reader.decrypt(""))
    except Exception:  # pypdf raises DependencyError for AES without `cryptography`, and others
        return False


def _key(title: str) -> str:
    return " ".join(title.split()).casefold()


def _outline_headings(reader: Any) -> dict[int, dict[str, int]]:
    """{page: {normalised title: depth}} for every outline entry."""
    out: dict[int, dict[str, int]] = {}

    def walk(items: list[Any], depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            page = reader.get_destination_page_number(item)
            title = getattr(item, "title", None)
            if page is not None and page >= 0 and title:
                out.setdefault(page + 1, {}).setdefault(_key(str(title)), depth)

    walk(reader.outline, 1)
    return out


def _ends_paragraph(line: str, full: int) -> bool:
    """A text layer has no paragraph marks: a line that ends a sentence well short of the page's
    longest line is taken as a paragraph's last (a heuristic; a wrong guess only moves a boundary
    the chunker may pack across anyway)."""
    stripped = line.rstrip()
    return stripped.endswith((".", "!", "?", ":", "\u2026")) and len(stripped.strip()) < 0.8 * full


def _page_blocks(text: str, offset: int, page: int, headings: dict[str, int]) -> list[Block]:
    blocks: list[Block] = []
    remaining = dict(headings)
    para_start: int | None = None
    pos = 0

    def close(end: int) -> None:
        nonlocal para_start
        if para_start is not None and (span := trim(text, para_start, end)):
            blocks.append(Block(BlockKind.PARAGRAPH, offset + span[0], offset + span[1], page=page))
        para_start = None

    lines = text.split("\n")
    full = max(len(line.strip()) for line in lines)
    for line in lines:
        start, end = pos, pos + len(line)
        pos = end + 1
        key = _key(line)
        if not key:
            close(start)
        elif key in remaining:
            close(start)
            span = trim(text, start, end)
            assert span is not None
            level = remaining.pop(key)
            blocks.append(
                Block(BlockKind.HEADING, offset + span[0], offset + span[1], level, line.strip(), page)
            )
        else:
            if para_start is None:
                para_start = start
            if _ends_paragraph(line, full):
                close(end)
    close(len(text))
    return blocks
