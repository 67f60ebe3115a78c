"""The content type of a document, read from its bytes, checked against what the client declared.

Hand-rolled magic-number checks rather than `puremagic` (or libmagic): Ragline reads seven formats,
and the two binary ones need more than a signature. A DOCX is a zip like any other Office file, an
EPUB or a JAR; only its `word/document.xml` part tells it apart, which a signature table cannot see.
An encrypted Office file is not a zip at all but an OLE2 container with an `EncryptionInfo` stream.
Everything else is text or unsupported; text formats are sniffed from their content, and a declared
text type is trusted (a CSV declared as plain text is the client's choice, not an error).

Cheap enough for the upload path: only the first kilobytes of text are sniffed and only the zip's
directory is read. The API calls `detect_content_type` before storing anything; the worker calls it
again through `parse`, so bytes that arrived later (a presigned upload) are held to the same rules.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile

from ragline.contracts import ContentType

from .errors import ContentTypeMismatch, EmptyDocument, EncryptedDocument, UnsupportedContentType

TEXT_TYPES = frozenset(
    {ContentType.TEXT, ContentType.MARKDOWN, ContentType.HTML, ContentType.CSV, ContentType.JSON}
)

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_SNIFF_CHARS = 64 * 1024
# Control characters other than tab, newline, carriage return and form feed: text has (almost) none.
_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 12, 13)) + b"\x7f"
_BINARY_RATIO = 0.01


def detect_content_type(data: bytes, declared: ContentType | None = None) -> ContentType:
    """The type to parse `data` as.

    Raises EmptyDocument (no bytes, or only whitespace), UnsupportedContentType (bytes in no
    supported format), ContentTypeMismatch
    (the bytes are a known format other than `declared`) or EncryptedDocument (a password-protected
    Office file). A PDF's own encryption is only found by parsing it."""
    if not data or data.isspace():
        raise EmptyDocument("the document is empty")
    found = _binary_type(data)
    if found is not None:
        if declared is not None and declared != found:
            raise ContentTypeMismatch(declared, _name(found))
        return found
    if not looks_like_text(data):
        raise UnsupportedContentType(
            "the bytes are in no supported format (PDF, DOCX, or UTF-8 text: plain, Markdown, HTML, CSV, JSON)"
        )
    if declared is None:
        return sniff_text(_head_text(data))
    if declared not in TEXT_TYPES:
        raise ContentTypeMismatch(declared, "text")
    return declared


def _binary_type(data: bytes) -> ContentType | None:
    # The PDF header may follow a little junk (the spec allows it within the first 1024 bytes).
    if b"%PDF-" in data[:1024]:
        return ContentType.PDF
    if data.startswith(_ZIP):
        return _zip_type(data)
    if data.startswith(_OLE2):
        if "EncryptionInfo".encode("utf-16-le") in data:
            raise EncryptedDocument("the file is a password-protected Office document")
        raise UnsupportedContentType("legacy Office documents (.doc, .xls) are not supported; save as DOCX")
    return None


def _zip_type(data: bytes) -> ContentType:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError):
        # A truncated zip loses its central directory; with a DOCX's first part it is still one.
        if b"word/" in data[:4096] or b"[Content_Types].xml" in data[:4096]:
            return ContentType.DOCX
        raise UnsupportedContentType("the bytes are a damaged zip archive") from None
    if "word/document.xml" in names:
        return ContentType.DOCX
    raise UnsupportedContentType("zip archives other than DOCX are not supported")


def looks_like_text(data: bytes) -> bool:
    head = data[:_SNIFF_CHARS]
    if not head.strip():
        return False
    if b"\x00" in head:
        return False
    controls = sum(head.count(c) for c in _CONTROL)
    return controls <= len(head) * _BINARY_RATIO


def sniff_text(head: str) -> ContentType:
    """HTML by its doctype or root element, JSON when it parses, CSV when csv.Sniffer finds a
    delimiter (comma, semicolon, tab) giving the same number of columns (three or more, or two under a header) on three or more rows; else Markdown (a superset of plain
    text: a plain file parsed as Markdown loses nothing)."""
    start = head.lstrip()[:512].lower()
    if start.startswith(("<!doctype html", "<html")) or ("<html" in start and start.startswith("<")):
        return ContentType.HTML
    if start[:1] in ("{", "[") and _is_json(head):
        return ContentType.JSON
    if _is_csv(head):
        return ContentType.CSV
    return ContentType.MARKDOWN


def _head_text(data: bytes) -> str:
    return data[:_SNIFF_CHARS].decode("utf-8-sig", errors="ignore").replace("\r\n", "\n")


def _is_json(head: str) -> bool:
    try:
        json.loads(head)
    except ValueError:
        # Only the head was read: a long document may be cut; its start is enough to tell.
        return len(head) >= _SNIFF_CHARS - 4 and head.lstrip()[1:2].strip() in ('"', "{", "[", "")
    return True


def _is_csv(head: str) -> bool:
    lines = [line for line in head.split("\n")[:50] if line.strip()]
    if len(head) >= _SNIFF_CHARS - 4:
        lines = lines[:-1]  # the last line may be cut
    if len(lines) < 3 or any(line.lstrip().startswith(("#", "|", "- ", "* ")) for line in lines):
        return False  # too little to tell, or Markdown
    sample = "\n".join(lines)
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return False
    widths = {len(row) for row in csv.reader(io.StringIO(sample), dialect)}
    if len(widths) != 1 or (width := widths.pop()) < 2:
        return False
    # Two columns on every line is also prose with one comma a line: then a header must show.
    try:
        return width >= 3 or csv.Sniffer().has_header(sample)
    except csv.Error:
        return False


def _name(content_type: ContentType) -> str:
    return {ContentType.PDF: "a PDF", ContentType.DOCX: "a DOCX document"}.get(content_type, content_type)
