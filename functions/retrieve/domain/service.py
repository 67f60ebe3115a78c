"""The search use case: one query, run as BM25, as vectors or both, fused and cut to top_k.

Visibility is enforced inside the index's query (pre-filtering); the `can_see` check here is
defence in depth against an adapter bug, never the filter itself.

When the query cannot be embedded for now, hybrid search answers from its keyword half, flagged
`degraded` (a slow or broken GPU endpoint must not take search down); vector search has no such
half and raises EmbeddingUnavailable (503)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from functions.retrieve.domain.errors import EmbeddingUnavailable
from functions.retrieve.domain.fusion import rrf
from ragline.contracts import Principal, SearchHit, SearchMode, SearchRequest, SearchResponse
from ragline.identity import can_see
from ragline.search.port import ScoredChunk, SearchFilter, SearchIndex

log = logging.getLogger(__name__)

MIN_CANDIDATES = 20
CANDIDATES_PER_HIT = 4


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class SearchService:
    def __init__(self, index: SearchIndex, embedder: Embedder, *, rrf_k: int = 60) -> None:
        self._index = index
        self._embedder = embedder
        self._rrf_k = rrf_k

    def search(self, principal: Principal, request: SearchRequest) -> SearchResponse:
        """Scores: BM25 in keyword mode, cosine similarity in vector mode, RRF in hybrid mode."""
        if not principal.groups:
            return SearchResponse(hits=[])
        flt = SearchFilter.for_principal(principal, collection=request.collection, metadata=request.metadata)
        candidates = max(request.top_k * CANDIDATES_PER_HIT, MIN_CANDIDATES)

        lists: list[list[ScoredChunk]] = []
        degraded_reason = None
        if request.mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
            lists.append(self._index.keyword_search(request.query, flt, candidates))
        if request.mode in (SearchMode.VECTOR, SearchMode.HYBRID):
            try:
                [vector] = self._embedder.embed([request.query])
            except EmbeddingUnavailable as exc:
                if request.mode == SearchMode.VECTOR:
                    raise
                log.warning("query embedding unavailable, answering from keywords only: %s", exc)
                degraded_reason = EmbeddingUnavailable.code
            else:
                lists.append(self._index.vector_search(vector, flt, candidates))

        ranked = rrf(lists, k=self._rrf_k) if len(lists) > 1 else lists[0]
        visible = [item for item in ranked if self._visible(principal, item)]
        return SearchResponse(
            hits=[_hit(item) for item in visible[: request.top_k]],
            degraded=degraded_reason is not None,
            degraded_reason=degraded_reason,
        )

    @staticmethod
    def _visible(principal: Principal, item: ScoredChunk) -> bool:
        if can_see(principal, item.chunk.allowed_groups, item.chunk.tenant):
            return True
        log.error("index returned chunk %s that the caller may not see; dropped", item.chunk.chunk_id)
        return False


def _hit(item: ScoredChunk) -> SearchHit:
    chunk = item.chunk
    return SearchHit(
        chunk_id=chunk.chunk_id,
        document_id=chunk.document_id,
        version=chunk.version,
        ordinal=chunk.ordinal,
        title=chunk.title,
        heading_path=chunk.heading_path,
        page=chunk.page,
        text=chunk.text,
        score=item.score,
        char_start=chunk.char_start,
        char_end=chunk.char_end,
    )
