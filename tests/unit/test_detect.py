"""Content type detection from the bytes, on real generated files."""

from __future__ import annotations

import io
import random
import zipfile

import pytest

from functions.ingest.domain.detect import detect_content_type
from functions.ingest.domain.errors import (
    ContentTypeMismatch,
    EmptyDocument,
    EncryptedDocument,
    UnsupportedContentType,
)
from ragline.contracts import ContentType as CT
from tests.support import documents

PDF = documents.pdf_document(1, 1)[0]
DOCX = documents.docx_document(1, 1)[0]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PDF, CT.PDF),
        (DOCX, CT.DOCX),
        (documents.html_page()[0], CT.HTML),
        (b"  <html><body><p>x</p></body></html>", CT.HTML),
        (documents.json_records(3), CT.JSON),
        (b'{"a": {"b": 1}}', CT.JSON),
        (documents.csv_document(5), CT.CSV),
        (documents.csv_document(5, delimiter=";"), CT.CSV),
        (documents.csv_document(5, delimiter="\t"), CT.CSV),
        (documents.markdown_document(1, 1).encode(), CT.MARKDOWN),
        (
            b"Just a line of prose, with a comma.\nAnother line, with one too.\nAnd a third, also.\n",
            CT.MARKDOWN,
        ),
        (b"| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n", CT.MARKDOWN),
    ],
)
def test_the_type_is_read_from_the_bytes(data: bytes, expected: CT) -> None:
    assert detect_content_type(data, None) == expected


@pytest.mark.parametrize("declared", [CT.PDF, CT.DOCX])
def test_binary_formats_declared_as_themselves_are_accepted(declared: CT) -> None:
    assert detect_content_type(PDF if declared == CT.PDF else DOCX, declared) == declared


@pytest.mark.parametrize("declared", [CT.TEXT, CT.MARKDOWN, CT.HTML, CT.CSV, CT.JSON])
def test_a_declared_text_type_is_trusted_for_text(declared: CT) -> None:
    assert detect_content_type(documents.csv_document(3), declared) == declared


@pytest.mark.parametrize(
    ("data", "declared"),
    [(DOCX, CT.PDF), (PDF, CT.DOCX), (PDF, CT.MARKDOWN), (DOCX, CT.TEXT), (b"plain words\n", CT.PDF)],
)
def test_declared_and_detected_types_that_disagree_are_a_mismatch(data: bytes, declared: CT) -> None:
    with pytest.raises(ContentTypeMismatch) as err:
        detect_content_type(data, declared)
    assert err.value.code == "content_type_mismatch"
    assert err.value.declared == declared


def _zip(names: list[str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        random.Random(7).randbytes(4096),
        b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(512),
        _zip(["xl/workbook.xml", "[Content_Types].xml"]),
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512),  # a legacy .doc
    ],
)
@pytest.mark.parametrize("declared", [None, CT.PDF, CT.MARKDOWN])
def test_bytes_in_no_supported_format_are_unsupported(data: bytes, declared: CT | None) -> None:
    with pytest.raises(UnsupportedContentType) as err:
        detect_content_type(data, declared)
    assert err.value.code == "unsupported_content_type"


@pytest.mark.parametrize("data", [b"", b"   \n\t "])
def test_no_bytes_or_only_whitespace_is_an_empty_document(data: bytes) -> None:
    with pytest.raises(EmptyDocument):
        detect_content_type(data, CT.MARKDOWN)


def test_a_password_protected_office_file_is_encrypted() -> None:
    # Encrypted OOXML is an OLE2 container holding an EncryptionInfo stream.
    data = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100) + "EncryptionInfo".encode("utf-16-le") + bytes(100)
    )
    with pytest.raises(EncryptedDocument):
        detect_content_type(data, CT.DOCX)


def test_a_truncated_pdf_is_still_a_pdf() -> None:
    # Its type is known at upload; that it cannot be read is found by parsing it.
    assert detect_content_type(documents.truncated_pdf(), CT.PDF) == CT.PDF
