"""DOCX: rendered to Markdown, with its structure recorded as blocks while rendering.

python-docx (MIT) reads the body in document order. Paragraphs styled `Title` or `Heading 1..9`
become `#` headings (Title is level 1, Heading n is level n, or n+1 under a Title); list paragraphs
(a `List ...` style or numbering properties) become `- ` items; tables become Markdown tables whose
first row is the header, so a table split across chunks repeats it. Text inside a paragraph is
kept as written: it is never re-read as Markdown."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from ragline.contracts import ContentType

from ..errors import CorruptDocument, ParsedDocumentTooLarge
from .base import BlockKind, ParsedDocument, TextBuilder

# A DOCX is a zip: refuse one that expands past this before parsing it (a zip bomb).
MAX_EXPANDED_BYTES = 512 * 1024 * 1024
_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)


def parse(data: bytes) -> ParsedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    _check_expansion(data)
    try:
        document = docx.Document(io.BytesIO(data))
        builder = TextBuilder(ContentType.DOCX)
        styles: dict[str | None, str] = {}
        has_title = any(_style(p, styles) == "title" for p in document.paragraphs)
        for item in document.iter_inner_content():
            if hasattr(item, "rows"):
                _table(builder, item)
            else:
                _paragraph(builder, item, _style(item, styles), has_title)
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, AttributeError) as exc:
        raise CorruptDocument(f"the DOCX cannot be read: {exc}") from exc
    except Exception as exc:  # lxml's XMLSyntaxError and friends: a damaged part
        if type(exc).__module__.startswith("lxml"):
            raise CorruptDocument(f"the DOCX has a damaged part: {exc}") from exc
        raise
    return builder.build()


def _check_expansion(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError) as exc:
        raise CorruptDocument(f"the DOCX is not a readable zip: {exc}") from exc
    if expanded > MAX_EXPANDED_BYTES:
        raise ParsedDocumentTooLarge("the DOCX, expanded,", expanded, MAX_EXPANDED_BYTES)


def _style(paragraph: Any, cache: dict[str | None, str]) -> str:
    """The paragraph's style name, lower case; looked up once per style id (python-docx searches
    the styles part on every `paragraph.style`)."""
    style_id = paragraph._p.style
    if style_id not in cache:
        style = paragraph.style
        cache[style_id] = (style.name or "").strip().lower() if style is not None else ""
    return cache[style_id]


def _is_list(paragraph: Any, style: str) -> bool:
    if style.startswith("list"):
        return True
    p_pr = paragraph._p.pPr
    return p_pr is not None and p_pr.numPr is not None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _paragraph(builder: TextBuilder, paragraph: Any, style: str, has_title: bool) -> None:
    text = paragraph.text.strip()
    if not text:
        return
    if style == "title":
        builder.add(f"# {_one_line(text)}", BlockKind.HEADING, level=1, title=_one_line(text))
        return
    if m := _HEADING_STYLE.match(style):
        level = min(int(m.group(1)) + (1 if has_title else 0), 6)
        title = _one_line(text)
        builder.add(f"{'#' * level} {title}", BlockKind.HEADING, level=level, title=title)
        return
    if _is_list(paragraph, style):
        ordered = "number" in style
        builder.add(
            f"{'1.' if ordered else '-'} {text}", BlockKind.LIST_ITEM, separator=_list_separator(builder)
        )
        return
    builder.add(text, BlockKind.PARAGRAPH)


def _list_separator(builder: TextBuilder) -> str:
    last = builder.last
    return "\n" if last is not None and last.kind == BlockKind.LIST_ITEM else "\n\n"


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _table(builder: TextBuilder, table: Any) -> None:
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a horizontally merged cell is listed once per grid column
                continue
            previous = cell._tc
            cells.append(_cell(cell.text))
        if any(cells):
            rows.append(cells)
    if not rows:
        return
    width = max(len(r) for r in rows)
    lines = ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows]
    header = lines[0] + "\n|" + "---|" * width
    if len(lines) == 1:
        builder.add(lines[0], BlockKind.TABLE)
        return
    builder.add("\n".join([header, *lines[1:]]), BlockKind.TABLE, header_chars=len(header))
