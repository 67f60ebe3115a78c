"""Split a parsed document into chunks that fit the embedding model, following its structure.

Sizes are measured in the embedding model's own tokenizer (a `TokenCounter`), never in characters:
a chunk the model would truncate loses its tail silently. Counts exclude special tokens; the
budget leaves `special_tokens` (2: [CLS] and [SEP] for BERT-style models) free for them, so a chunk
of `max_tokens - special_tokens` content tokens encodes to at most `max_tokens`.

The structure comes from the parser (`ParsedDocument.blocks`), whatever the format:
- Headings open sections; each chunk belongs to one section and carries its heading path. A
  section holding only its heading joins the sub-section that follows it, so a heading is never a
  chunk on its own when it has children.
- Blocks (paragraphs, list items, code, tables, records) are packed greedily up to the budget; a
  block that fits the budget is never split, and one that does not fit where the current chunk
  ends starts the next chunk whole (so a table that fits stays with its header).
- A block over the budget is split into sentences (code: lines; tables: rows), a sentence over the
  budget into runs of whole words. Only a single whitespace-free run longer than the whole budget
  (a URL, a base64 blob) is cut inside itself, at the longest prefix that fits.
- A table over the budget is split between rows, and every part after the first starts with the
  table's header (header row and `|---|` line) repeated: such a chunk's text is
  `header + "\\n" + text[char_start:char_end]`, not a pure slice; its offsets are those of the rows
  it covers. (A header taking more than half the budget is not repeated.)
- Consecutive chunks of a section overlap: a chunk starts with the trailing sentences (else words)
  of the previous one, up to `overlap_tokens` and never pushing the chunk over the budget. A chunk
  that starts with a repeated table header has no overlap.
- A chunk's page is the page of the block it starts in (PDF; None for other formats).

Every other chunk's text is exactly `text[char_start:char_end]` of the parsed text, starting and
ending on non-whitespace; every non-whitespace character of the document is in at least one chunk.

Cost: each block is tokenized once; a chunk is measured once more as a whole (the sum of its parts
is an estimate, exact for WordPiece across whitespace) and only re-measured when that estimate was
wrong; overlap starts are found by bisection. So chunking is linear in the document's tokens.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .formats.base import Block, BlockKind, ParsedDocument
from .formats.markdown import trim

SPECIAL_TOKENS_MARGIN = 2


class TokenCounter(Protocol):
    def count(self, text: str) -> int:
        """Tokens `text` encodes to, without special tokens and without truncation."""


@dataclass(frozen=True)
class ChunkSpan:
    text: str
    char_start: int
    char_end: int
    token_count: int
    heading_path: tuple[str, ...] = ()
    page: int | None = None


@dataclass(frozen=True, slots=True)
class _Unit:
    """Something packed whole: a block that fits, or a piece of one that did not. A row of a split
    table carries the table's header, repeated when a chunk starts at it."""

    start: int
    end: int
    tokens: int
    header: tuple[int, int] | None = None


@dataclass
class _Section:
    heading_path: tuple[str, ...]
    blocks: list[Block] = field(default_factory=list)


# A sentence ends at terminal punctuation (and closing quotes/brackets) followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*\s+")
# Where an overlap may start: after a sentence end or a line break.
_BOUNDARY = re.compile(r"(?:[.!?\u2026][\"'\u201d\u2019)\]]*\s+|\n\s*)(?=\S)")
_WORD = re.compile(r"\S+")
_WORD_START = re.compile(r"(?<!\S)\S")


def sections(parsed: ParsedDocument) -> list[_Section]:
    out = [_Section(())]
    stack: list[tuple[int, str]] = []
    for block in parsed.blocks:
        if block.kind == BlockKind.HEADING:
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.title or ""))
            out.append(_Section(tuple(title for _, title in stack)))
        out[-1].blocks.append(block)
    return _merge_bare_headings([s for s in out if s.blocks])


def _merge_bare_headings(sections: list[_Section]) -> list[_Section]:
    """A section that is only its heading joins the following sub-section (`# A` then `## B`)."""
    out: list[_Section] = []
    for section in reversed(sections):
        bare = len(section.blocks) == 1 and section.blocks[0].kind == BlockKind.HEADING
        if bare and out:
            child = out[-1]
            depth = len(section.heading_path)
            if len(child.heading_path) > depth and child.heading_path[:depth] == section.heading_path:
                child.blocks.insert(0, section.blocks[0])
                continue
        out.append(section)
    return list(reversed(out))


class Chunker:
    def __init__(
        self,
        tokenizer: TokenCounter,
        max_tokens: int,
        overlap_tokens: int = 0,
        *,
        special_tokens: int = SPECIAL_TOKENS_MARGIN,
    ) -> None:
        self._tokenizer = tokenizer
        self._special_tokens = special_tokens
        self.budget, self.overlap_tokens = self._budgets(max_tokens, overlap_tokens)

    def _budgets(self, max_tokens: int, overlap_tokens: int) -> tuple[int, int]:
        budget = max_tokens - self._special_tokens
        if budget < 1:
            raise ValueError(f"max_tokens must exceed the {self._special_tokens} special tokens")
        if overlap_tokens < 0:
            raise ValueError("overlap_tokens must not be negative")
        return budget, min(overlap_tokens, budget - 1)

    def chunk(
        self, parsed: ParsedDocument, *, max_tokens: int | None = None, overlap_tokens: int | None = None
    ) -> list[ChunkSpan]:
        """Chunks of `parsed`, in document order. `max_tokens`/`overlap_tokens` override the
        chunker's own for this call (a collection's settings)."""
        budget, overlap = self.budget, self.overlap_tokens
        if max_tokens is not None or overlap_tokens is not None:
            budget, overlap = self._budgets(
                max_tokens if max_tokens is not None else self.budget + self._special_tokens,
                overlap_tokens if overlap_tokens is not None else self.overlap_tokens,
            )
        packer = _Packer(self._tokenizer.count, parsed.text, budget, overlap, _page_lookup(parsed.blocks))
        chunks: list[ChunkSpan] = []
        for section in sections(parsed):
            units = [unit for block in section.blocks for unit in packer.units(block)]
            chunks.extend(packer.pack(units, section.heading_path))
        return chunks


def _page_lookup(blocks: Sequence[Block]) -> Callable[[int], int | None]:
    if all(block.page is None for block in blocks):
        return lambda _offset: None
    starts = [block.start for block in blocks]

    def page(offset: int) -> int | None:
        i = bisect.bisect_right(starts, offset) - 1
        return blocks[max(i, 0)].page

    return page


class _Packer:
    """One call's state: the text, the budgets and the tokenizer."""

    def __init__(
        self,
        count: Callable[[str], int],
        text: str,
        budget: int,
        overlap_tokens: int,
        page: Callable[[int], int | None],
    ) -> None:
        self._count = count
        self.text = text
        self.budget = budget
        self.overlap_tokens = overlap_tokens
        self._page = page

    # ---------------------------------------------------------------------------------------
    # Units: blocks that fit, or the pieces of blocks that do not
    # ---------------------------------------------------------------------------------------

    def units(self, block: Block) -> Iterator[_Unit]:
        text = self.text
        tokens = self._count(text[block.start : block.end])
        if tokens <= self.budget:
            yield _Unit(block.start, block.end, tokens)
            return
        if block.kind == BlockKind.TABLE and block.header_end is not None:
            yield from self._table_units(block)
            return
        pieces = (
            self._line_pieces if block.kind in (BlockKind.CODE, BlockKind.TABLE) else self._sentence_pieces
        )
        for start, end in pieces(block.start, block.end):
            yield from self._piece_units(start, end)

    def _piece_units(self, start: int, end: int, header: tuple[int, int] | None = None) -> Iterator[_Unit]:
        tokens = self._count(self.text[start:end])
        if tokens <= self.budget:
            yield _Unit(start, end, tokens, header)
        else:
            yield from self._word_units(start, end)

    def _table_units(self, block: Block) -> Iterator[_Unit]:
        """Rows, each carrying the header to repeat; the first row stays with the header itself."""
        assert block.header_end is not None
        header = (block.start, block.header_end)
        header_tokens = self._count(self.text[block.start : block.header_end])
        rows = list(self._line_pieces(block.header_end, block.end))
        if header_tokens + 1 > self.budget // 2 or not rows:
            for start, end in self._line_pieces(block.start, block.end):
                yield from self._piece_units(start, end)
            return
        first = self._count(self.text[block.start : rows[0][1]])
        if first <= self.budget:
            yield _Unit(block.start, rows[0][1], first)
            rows = rows[1:]
        else:
            yield _Unit(block.start, block.header_end, header_tokens)
        room = self.budget - header_tokens
        for start, end in rows:
            tokens = self._count(self.text[start:end])
            if tokens <= room:
                yield _Unit(start, end, tokens, header)
            else:
                yield from self._piece_units(start, end)

    def _sentence_pieces(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        text, piece_start = self.text, start
        for m in _SENTENCE_END.finditer(text, start, end):
            if m.end() >= end:
                break
            span = trim(text, piece_start, m.end())
            if span:
                yield span
            piece_start = m.end()
        span = trim(text, piece_start, end)
        if span:
            yield span

    def _line_pieces(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        pos = start
        for line in self.text[start:end].split("\n"):
            span = trim(self.text, pos, pos + len(line))
            if span:
                yield span
            pos += len(line) + 1

    def _word_units(self, start: int, end: int) -> Iterator[_Unit]:
        words: list[_Unit] = []
        for m in _WORD.finditer(self.text, start, end):
            tokens = self._count(m.group())
            if tokens <= self.budget:
                words.append(_Unit(m.start(), m.end(), tokens))
            else:
                words.extend(self._cut_run(m.start(), m.end()))
        yield from self._greedy(words)

    def _cut_run(self, start: int, end: int) -> Iterator[_Unit]:
        """The one place a word is cut: a whitespace-free run longer than the whole budget."""
        text = self.text
        while start < end:
            lo, hi = 1, end - start  # longest prefix that fits, by bisection on its length
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._count(text[start : start + mid]) <= self.budget:
                    lo = mid
                else:
                    hi = mid - 1
            yield _Unit(start, start + lo, self._count(text[start : start + lo]))
            start += lo

    # ---------------------------------------------------------------------------------------
    # Packing
    # ---------------------------------------------------------------------------------------

    def _fill(self, units: list[_Unit], i: int, start: int, prefix: str = "") -> tuple[int, int]:
        """Pack units[i:j] into one span from `start` (at or before units[i]), after `prefix`,
        within the budget; returns j and the span's tokens. The sum of the parts estimates the
        whole; the whole is then measured and units given back until it fits. units[i] always
        fits from `start` after `prefix`: callers guarantee it."""
        text = self.text

        def measure(j: int) -> int:
            return self._count(prefix + text[start : units[j - 1].end])

        first = measure(i + 1) if start < units[i].start or prefix else units[i].tokens
        estimate, j = first, i + 1
        while j < len(units) and estimate + units[j].tokens <= self.budget:
            estimate += units[j].tokens
            j += 1
        tokens = measure(j) if j - 1 > i else first
        while tokens > self.budget and j - 1 > i:
            j -= 1
            tokens = measure(j) if j - 1 > i else first
        return j, tokens

    def _greedy(self, units: list[_Unit]) -> Iterator[_Unit]:
        i = 0
        while i < len(units):
            j, tokens = self._fill(units, i, units[i].start)
            yield _Unit(units[i].start, units[j - 1].end, tokens)
            i = j

    def pack(self, units: list[_Unit], heading_path: tuple[str, ...]) -> list[ChunkSpan]:
        text = self.text
        chunks: list[ChunkSpan] = []
        prefixed = False  # whether the previous chunk started with a repeated table header
        i = 0
        while i < len(units):
            first = units[i]
            prefix = ""
            if first.header is not None:
                start = first.start
                prefix = text[first.header[0] : first.header[1]] + "\n"
                if self._count(prefix + text[first.start : first.end]) > self.budget:
                    prefix = ""  # the tokenizer did not add up: the row goes without its header
            elif chunks and not prefixed:
                start = self._overlap_start(chunks[-1], first)
            else:
                start = first.start
            j, tokens = self._fill(units, i, start, prefix)
            end = units[j - 1].end
            chunks.append(
                ChunkSpan(prefix + text[start:end], start, end, tokens, heading_path, self._page(start))
            )
            prefixed = bool(prefix)
            i = j
        return chunks

    def _overlap_start(self, previous: ChunkSpan, first: _Unit) -> int:
        """Where the next chunk starts: the earliest sentence (else word) start in the previous chunk
        whose tail fits `overlap_tokens` and leaves room for the first new unit."""
        if self.overlap_tokens == 0:
            return first.start
        text = self.text
        prev_start, prev_end = previous.char_start, previous.char_end
        sentences = [m.end() for m in _BOUNDARY.finditer(text, prev_start, prev_end) if m.end() > prev_start]
        words = [
            m.start() for m in _WORD_START.finditer(text, prev_start, prev_end) if m.start() > prev_start
        ]
        # A tail of at most `overlap_tokens` tokens has at most as many words: earlier starts are out.
        if len(words) > self.overlap_tokens:
            lowest = words[-self.overlap_tokens]
            sentences = sentences[bisect.bisect_left(sentences, lowest) :]
        for candidates in (sentences, words[-self.overlap_tokens :]):
            best = self._earliest_within(candidates, prev_end, self.overlap_tokens)
            if best is None:
                continue
            # The overlap gives way to the new content: move it later until both fit.
            for pos in words[bisect.bisect_left(words, best) :]:
                if self._count(text[pos : first.end]) <= self.budget:
                    return pos
            return first.start
        return first.start

    def _earliest_within(self, candidates: list[int], end: int, limit: int) -> int | None:
        """The earliest candidate whose tail `text[candidate:end]` has at most `limit` tokens (tails
        shrink as the candidate moves later, so this is a bisection)."""
        lo, hi = 0, len(candidates)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._count(self.text[candidates[mid] : end]) <= limit:
                hi = mid
            else:
                lo = mid + 1
        return candidates[lo] if lo < len(candidates) else None
