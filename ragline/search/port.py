"""What every search index adapter provides. Domain code depends on this, never on an engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ragline.contracts import Chunk, Principal
from ragline.search.fields import Condition


@dataclass(frozen=True)
class SearchFilter:
    """Applied inside the engine's query (pre-filtering), never to results afterwards.

    An empty `groups_any` matches nothing: a caller with no groups sees no chunk. `conditions` are
    on declared metadata fields (see ragline.search.fields) and must all hold."""

    groups_any: frozenset[str]
    tenant: str | None = None
    collection: str | None = None
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def for_principal(
        cls,
        principal: Principal,
        *,
        collection: str | None = None,
        conditions: tuple[Condition, ...] = (),
    ) -> SearchFilter:
        """The one way a caller's visibility becomes a filter: their groups and their tenant."""
        return cls(
            groups_any=principal.groups,
            tenant=principal.tenant,
            collection=collection,
            conditions=conditions,
        )


@dataclass(frozen=True)
class IndexedChunk:
    chunk: Chunk
    vector: Sequence[float]


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float


class SearchIndex(Protocol):
    def ensure_index(self) -> None:
        """Create the index (or table) and its mapping if missing; idempotent."""

    def upsert(self, items: Sequence[IndexedChunk]) -> None:
        """Write chunks keyed by chunk id; re-writing a chunk replaces it."""

    def delete_document(self, document_id: str, version: int | None = None) -> int:
        """Remove a document's chunks (one version, or all); returns how many were removed."""

    def keyword_search(self, query: str, flt: SearchFilter, k: int) -> list[ScoredChunk]:
        """BM25 over chunk text, title and headings (the last two boosted), best first."""

    def vector_search(self, vector: Sequence[float], flt: SearchFilter, k: int) -> list[ScoredChunk]:
        """Approximate nearest neighbours by cosine similarity, best first."""

    def reindex(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Rebuild from the current settings (declared fields, analyzers, vector index) while
        searches keep being answered; returns what was done."""
