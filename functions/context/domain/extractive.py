"""The answer when no LLM can give one: the top retrieved chunks, quoted and cited.

Nothing is generated, so nothing is made up; the first line says the model was unavailable, and the
answer is flagged degraded. Excerpts are cut at a sentence end where one falls in the second half."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from functions.context.domain.prompt import citation_for, heading_of
from ragline.contracts import Citation, SearchHit

PREFACE = (
    "The language model is unavailable right now, so here are the most relevant passages from your documents."
)
MAX_SOURCES = 3
EXCERPT_CHARS = 500


@dataclass(frozen=True)
class Extract:
    parts: list[str]  # streamed as token events, in order
    citations: list[Citation]


def extractive_answer(
    hits: Sequence[SearchHit], *, max_sources: int = MAX_SOURCES, excerpt_chars: int = EXCERPT_CHARS
) -> Extract:
    """The best `max_sources` hits in rank order, each as `[n] Title > Heading: excerpt`."""
    top = list(hits[:max_sources])
    parts = [PREFACE]
    citations = []
    for marker, hit in enumerate(top, start=1):
        parts.append(f"\n\n[{marker}] {heading_of(hit)}: {excerpt(hit.text, excerpt_chars)}")
        citations.append(citation_for(hit, marker))
    return Extract(parts, citations)


def excerpt(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    sentence_end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if sentence_end >= limit // 2:
        return cut[: sentence_end + 1]
    word_end = cut.rfind(" ")
    return (cut[:word_end] if word_end > 0 else cut) + " …"
