"""Split parsed text into chunks that fit the embedding model, keeping structure where it can.

Sizes are measured in the embedding model's own tokenizer (a `TokenCounter`), never in characters:
a chunk the model would truncate loses its tail silently. Counts exclude special tokens; the
budget leaves `special_tokens` (2: [CLS] and [SEP] for BERT-style models) free for them, so a chunk
of `max_tokens - special_tokens` content tokens encodes to at most `max_tokens`.

How a document is cut:
- Markdown is read into sections by ATX headings (`#` .. `######`, not inside fenced code); each
  chunk belongs to one section and carries its heading path. A section holding only its heading
  joins the sub-section that follows it, so a heading is never a chunk on its own when it has
  children.
- A section is split into blocks: paragraphs, list items, fenced code blocks and tables. Blocks
  are packed greedily up to the budget; a block that fits the budget is never split.
- A block over the budget is split into sentences (code: lines), a sentence over the budget into
  runs of whole words. Only a single whitespace-free run longer than the whole budget (a URL, a
  base64 blob) is cut inside itself, at the longest prefix that fits.
- Consecutive chunks of a section overlap: a chunk starts with the trailing sentences (else words)
  of the previous one, up to `overlap_tokens` and never pushing the chunk over the budget.
- Plain text is one section of paragraphs.

Every chunk's text is exactly `text[char_start:char_end]` of the parsed text, starting and ending
on non-whitespace; every non-whitespace character of the document is in at least one chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ragline.contracts import ContentType

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


@dataclass(frozen=True)
class _Block:
    start: int
    end: int
    kind: str  # heading | paragraph | list_item | code | table


@dataclass(frozen=True)
class _Unit:
    """Something packed whole: a block that fits, or a piece of one that did not."""

    start: int
    end: int
    tokens: int


@dataclass
class _Section:
    heading_path: tuple[str, ...]
    blocks: list[_Block] = field(default_factory=list)


_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_TABLE_ROW = re.compile(r"^ {0,3}\|")
# A sentence ends at terminal punctuation (and closing quotes/brackets) followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*\s+")
# Where an overlap may start: after a sentence end or a line break.
_BOUNDARY = re.compile(r"(?:[.!?\u2026][\"'\u201d\u2019)\]]*\s+|\n\s*)(?=\S)")
_WORD = re.compile(r"\S+")
_WORD_START = re.compile(r"(?<!\S)\S")


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, newline excluded."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
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


def markdown_sections(text: str) -> list[_Section]:
    lines = _lines(text)
    sections = [_Section(())]
    stack: list[tuple[int, str]] = []

    def add(first: int, last: int, kind: str) -> None:
        span = _trim(text, lines[first][0], lines[last][1])
        if span:
            sections[-1].blocks.append(_Block(span[0], span[1], kind))

    i = 0
    while i < len(lines):
        line = text[lines[i][0] : lines[i][1]]
        if not line.strip():
            i += 1
            continue
        if m := _FENCE.match(line):
            j = i + 1
            while j < len(lines) and not _closes(text[lines[j][0] : lines[j][1]], m.group(1)):
                j += 1
            last = min(j, len(lines) - 1)  # an unclosed fence runs to the end of the document
            add(i, last, "code")
            i = last + 1
            continue
        if m := _HEADING.match(line):
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, (m.group(2) or "").strip()))
            sections.append(_Section(tuple(title for _, title in stack)))
            add(i, i, "heading")
            i += 1
            continue
        if _TABLE_ROW.match(line):
            j = i
            while j + 1 < len(lines) and _TABLE_ROW.match(text[lines[j + 1][0] : lines[j + 1][1]]):
                j += 1
            add(i, j, "table")
            i = j + 1
            continue
        kind = "list_item" if _LIST_ITEM.match(line) else "paragraph"
        j = i
        while j + 1 < len(lines):
            nxt = text[lines[j + 1][0] : lines[j + 1][1]]
            if not nxt.strip() or _starts_block(nxt):
                break
            j += 1
        add(i, j, kind)
        i = j + 1
    return _merge_bare_headings([s for s in sections if s.blocks])


def _merge_bare_headings(sections: list[_Section]) -> list[_Section]:
    """A section that is only its heading joins the following sub-section (`# A` then `## B`)."""
    out: list[_Section] = []
    for section in reversed(sections):
        bare = len(section.blocks) == 1 and section.blocks[0].kind == "heading"
        if bare and out:
            child = out[-1]
            depth = len(section.heading_path)
            if len(child.heading_path) > depth and child.heading_path[:depth] == section.heading_path:
                child.blocks.insert(0, section.blocks[0])
                continue
        out.append(section)
    return list(reversed(out))


def plain_sections(text: str) -> list[_Section]:
    lines = _lines(text)
    section = _Section(())
    i = 0
    while i < len(lines):
        if not text[lines[i][0] : lines[i][1]].strip():
            i += 1
            continue
        j = i
        while j + 1 < len(lines) and text[lines[j + 1][0] : lines[j + 1][1]].strip():
            j += 1
        span = _trim(text, lines[i][0], lines[j][1])
        if span:
            section.blocks.append(_Block(span[0], span[1], "paragraph"))
        i = j + 1
    return [section] if section.blocks else []


class Chunker:
    def __init__(
        self,
        tokenizer: TokenCounter,
        max_tokens: int,
        overlap_tokens: int = 0,
        *,
        special_tokens: int = SPECIAL_TOKENS_MARGIN,
    ) -> None:
        if max_tokens - special_tokens < 1:
            raise ValueError(f"max_tokens must exceed the {special_tokens} special tokens")
        if overlap_tokens < 0:
            raise ValueError("overlap_tokens must not be negative")
        self._tokenizer = tokenizer
        self.budget = max_tokens - special_tokens
        self.overlap_tokens = min(overlap_tokens, self.budget - 1)

    def chunk(self, text: str, content_type: ContentType) -> list[ChunkSpan]:
        sections = markdown_sections(text) if content_type == ContentType.MARKDOWN else plain_sections(text)
        chunks: list[ChunkSpan] = []
        for section in sections:
            units = [unit for block in section.blocks for unit in self._units(text, block)]
            chunks.extend(self._pack(text, units, section.heading_path))
        return chunks

    # ---------------------------------------------------------------------------------------
    # Units: blocks that fit, or the pieces of blocks that do not
    # ---------------------------------------------------------------------------------------

    def _count(self, text: str) -> int:
        return self._tokenizer.count(text)

    def _units(self, text: str, block: _Block) -> Iterator[_Unit]:
        tokens = self._count(text[block.start : block.end])
        if tokens <= self.budget:
            yield _Unit(block.start, block.end, tokens)
            return
        pieces = self._line_pieces if block.kind == "code" else self._sentence_pieces
        for start, end in pieces(text, block.start, block.end):
            tokens = self._count(text[start:end])
            if tokens <= self.budget:
                yield _Unit(start, end, tokens)
            else:
                yield from self._word_units(text, start, end)

    @staticmethod
    def _sentence_pieces(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        piece_start = start
        for m in _SENTENCE_END.finditer(text, start, end):
            if m.end() >= end:
                break
            span = _trim(text, piece_start, m.end())
            if span:
                yield span
            piece_start = m.end()
        span = _trim(text, piece_start, end)
        if span:
            yield span

    @staticmethod
    def _line_pieces(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        pos = start
        for line in text[start:end].split("\n"):
            span = _trim(text, pos, pos + len(line))
            if span:
                yield span
            pos += len(line) + 1

    def _word_units(self, text: str, start: int, end: int) -> Iterator[_Unit]:
        words: list[_Unit] = []
        for m in _WORD.finditer(text, start, end):
            tokens = self._count(m.group())
            if tokens <= self.budget:
                words.append(_Unit(m.start(), m.end(), tokens))
            else:
                words.extend(self._cut_run(text, m.start(), m.end()))
        yield from self._greedy(words, text)

    def _cut_run(self, text: str, start: int, end: int) -> Iterator[_Unit]:
        """The one place a word is cut: a whitespace-free run longer than the whole budget."""
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

    def _fill(self, text: str, units: list[_Unit], i: int, start: int) -> tuple[int, int]:
        """Pack units[i:j] into one span from `start` (at or before units[i]) within the budget;
        returns j and the span's tokens. The sum of the parts estimates the whole (exact for
        WordPiece across whitespace); the whole is then measured and units given back until it fits.
        units[i] always fits from `start`: callers guarantee it."""
        first = self._count(text[start : units[i].end]) if start < units[i].start else units[i].tokens
        estimate, j = first, i + 1
        while j < len(units) and estimate + units[j].tokens <= self.budget:
            estimate += units[j].tokens
            j += 1
        tokens = self._count(text[start : units[j - 1].end]) if j - 1 > i else first
        while tokens > self.budget and j - 1 > i:
            j -= 1
            tokens = self._count(text[start : units[j - 1].end]) if j - 1 > i else first
        return j, tokens

    def _greedy(self, units: list[_Unit], text: str) -> Iterator[_Unit]:
        i = 0
        while i < len(units):
            j, tokens = self._fill(text, units, i, units[i].start)
            yield _Unit(units[i].start, units[j - 1].end, tokens)
            i = j

    def _pack(self, text: str, units: list[_Unit], heading_path: tuple[str, ...]) -> list[ChunkSpan]:
        chunks: list[ChunkSpan] = []
        i = 0
        while i < len(units):
            start = self._overlap_start(text, chunks[-1], units[i]) if chunks else units[i].start
            j, tokens = self._fill(text, units, i, start)
            end = units[j - 1].end
            chunks.append(ChunkSpan(text[start:end], start, end, tokens, heading_path))
            i = j
        return chunks

    def _overlap_start(self, text: str, previous: ChunkSpan, first: _Unit) -> int:
        """Where the next chunk starts: the earliest sentence (else word) start in the previous chunk
        whose tail fits `overlap_tokens` and leaves room for the first new unit."""
        if self.overlap_tokens == 0:
            return first.start
        prev_start, prev_end = previous.char_start, previous.char_end
        sentences = [m.end() for m in _BOUNDARY.finditer(text, prev_start, prev_end) if m.end() > prev_start]
        words = [
            m.start() for m in _WORD_START.finditer(text, prev_start, prev_end) if m.start() > prev_start
        ]
        for candidates in (sentences, words):
            best = None
            for pos in reversed(candidates):
                if self._count(text[pos:prev_end]) > self.overlap_tokens:
                    break
                best = pos
            if best is None:
                continue
            # The overlap gives way to the new content: move it later until both fit.
            for pos in (p for p in words if p >= best):
                if self._count(text[pos : first.end]) <= self.budget:
                    return pos
            return first.start
        return first.start
