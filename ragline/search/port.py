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
    """A chunk, its vector and whether searches see it.

    `active` is index state, not content: every search filters on it inside the query. The normal
    pipeline writes chunks active; the update saga writes a new version's chunks inactive, activates
    them (`SearchIndex.set_active`), then deletes the old version's (docs/search.md, "Versions and the
    active flag")."""

    chunk: Chunk
    vector: Sequence[float]
    active: bool = True


@dataclass(frozen=True)
class VersionCount:
    """How many chunks of one document version the index holds, searchable (active) or not."""

    document_id: str
    version: int
    active: int
    inactive: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.document_id, self.version)


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float


class SearchIndex(Protocol):
    def ensure_index(self) -> None:
        """Create the index (or table) and its mapping if missing; idempotent."""

    def upsert(self, items: Sequence[IndexedChunk]) -> None:
        """Write chunks keyed by chunk id; re-writing a chunk replaces it."""

    def set_active(self, document_id: str, version: int, active: bool) -> int:
        """Make one version's chunks visible to searches (or hide them), visible to the very next
        search once it returns; returns how many chunks of that version there are. Idempotent."""

    def delete_document(self, document_id: str, version: int | None = None) -> int:
        """Remove a document's chunks (one version, or all); returns how many were removed."""

    def count(self, document_id: str, version: int | None = None, *, active: bool | None = None) -> int:
        """How many chunks of a document (one version, or all) readers' searches would find, before
        any caller's filter: active ones only, inactive ones only, or (None) both."""

    def inventory(self, after: tuple[str, int] | None = None, size: int = 1000) -> list[VersionCount]:
        """Chunk counts of every (document, version) the readers' index holds, ordered by document
        id then version: the first `size` after `after`. A shorter page is the last. What the
        reconciler compares with the documents table (docs/saga.md, "Reconciliation")."""

    def keyword_search(self, query: str, flt: SearchFilter, k: int) -> list[ScoredChunk]:
        """BM25 over active chunks' text, title and headings (the last two boosted), best first."""

    def vector_search(self, vector: Sequence[float], flt: SearchFilter, k: int) -> list[ScoredChunk]:
        """Approximate nearest neighbours among active chunks by cosine similarity, best first."""

    def reindex(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Rebuild from the current settings (declared fields, analyzers, vector index) while
        searches keep being answered; returns what was done."""
