"""The search use case: one query, run as BM25, as vectors or both, fused and cut to top_k.

The index returns active chunks only; of a document with two active versions (the moment of an
update between activating the new version and deleting the old) a response keeps only the newest
version's chunks (`latest_versions`, applied to both halves before they are fused).

Visibility is enforced inside the index's query (pre-filtering) from the one filter
`SearchFilter.for_principal` builds; the `can_see` check here is defence in depth against an
adapter bug, never the filter itself.

When the query cannot be embedded for now, hybrid search answers from its keyword half, flagged
`degraded` (a slow or broken GPU endpoint must not take search down); vector search has no such
half and raises EmbeddingUnavailable (503)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from functions.retrieve.domain.errors import EmbeddingUnavailable
from functions.retrieve.domain.fusion import convex, rrf
from functions.retrieve.domain.versions import latest_versions, newest_versions
from ragline.contracts import (
    FusionParams,
    Principal,
    SearchHit,
    SearchMode,
    SearchRequest,
    SearchResponse,
)
from ragline.identity import can_see
from ragline.search.fields import FilterableFields
from ragline.search.port import ScoredChunk, SearchFilter, SearchIndex

log = logging.getLogger(__name__)

MIN_CANDIDATES = 20
CANDIDATES_PER_HIT = 4
# Shared by every SearchService in the process; a Lambda environment serves one request at a time.
_HALVES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="keyword-search")


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class SearchService:
    def __init__(
        self,
        index: SearchIndex,
        embedder: Embedder,
        *,
        fields: FilterableFields | None = None,
        fusion: FusionParams | None = None,
    ) -> None:
        self._index = index
        self._embedder = embedder
        self._fields = fields if fields is not None else FilterableFields({})
        self._fusion = fusion or FusionParams()

    def search(self, principal: Principal, request: SearchRequest) -> SearchResponse:
        """Scores: BM25 in keyword mode, cosine similarity in vector mode, RRF in hybrid mode.
        Raises InvalidFilter (the request's metadata filters) before anything runs."""
        conditions = self._fields.conditions(request.metadata)
        if not principal.groups:
            return SearchResponse(hits=[], no_answer=True)
        flt = SearchFilter.for_principal(principal, collection=request.collection, conditions=conditions)
        # Fusion and grouping both need depth: a chunk ranked 30th by one half can win overall, and
        # one document's chunks can fill the top of a list.
        candidates = max(request.top_k * CANDIDATES_PER_HIT, MIN_CANDIDATES)
        fusion = request.fusion or self._fusion

        keyword: list[ScoredChunk] | None = None
        vector: list[ScoredChunk] | None = None
        degraded_reason = None
        # Hybrid runs its keyword half beside the embedding call and the vector half (the engines and
        # the HTTP call release the GIL), so it takes about as long as the slower half, not the sum.
        pending_keyword = (
            _HALVES.submit(self._index.keyword_search, request.query, flt, candidates)
            if request.mode == SearchMode.HYBRID
            else None
        )
        if request.mode == SearchMode.KEYWORD:
            keyword = self._index.keyword_search(request.query, flt, candidates)
        try:
            if request.mode in (SearchMode.VECTOR, SearchMode.HYBRID):
                try:
                    [query_vector] = self._embedder.embed([request.query])
                except EmbeddingUnavailable as exc:
                    if request.mode == SearchMode.VECTOR:
                        raise
                    log.warning("query embedding unavailable, answering from keywords only: %s", exc)
                    degraded_reason = EmbeddingUnavailable.code
                else:
                    vector = self._index.vector_search(query_vector, flt, candidates)
        finally:
            if pending_keyword is not None:
                keyword = pending_keyword.result()

        # One version per document (the newest either half found), before fusion, so the surviving
        # version ranks as if the superseded one were not there, and before the cut to top_k, which
        # the deeper candidate lists still fill.
        newest = newest_versions(keyword or [], vector or [])
        keyword = latest_versions(keyword, newest) if keyword is not None else None
        vector = latest_versions(vector, newest) if vector is not None else None

        if keyword is not None and vector is not None:
            weights = [fusion.keyword_weight, fusion.vector_weight]
            if fusion.method == "convex":
                ranked = convex([keyword, vector], weights=weights)
            else:
                ranked = rrf([keyword, vector], k=fusion.k, weights=weights)
        else:
            ranked = keyword if keyword is not None else vector or []

        # The relevance gate reads the half whose score means something absolute: cosine similarity
        # when vectors ran (RRF scores only order), else BM25.
        gate = vector if vector is not None else keyword or []
        below = request.min_score is not None and (not gate or gate[0].score < request.min_score)

        visible = [item for item in ranked if self._visible(principal, item)]
        if request.group_by == "document":
            visible = _best_per_document(visible)
        hits = [] if below else [_hit(item) for item in visible[: request.top_k]]
        return SearchResponse(
            hits=hits,
            no_answer=not hits,
            degraded=degraded_reason is not None,
            degraded_reason=degraded_reason,
        )

    @staticmethod
    def _visible(principal: Principal, item: ScoredChunk) -> bool:
        if can_see(principal, item.chunk.allowed_groups, item.chunk.tenant):
            return True
        log.error("index returned chunk %s that the caller may not see; dropped", item.chunk.chunk_id)
        return False


def _best_per_document(ranked: list[ScoredChunk]) -> list[ScoredChunk]:
    seen: set[str] = set()
    best: list[ScoredChunk] = []
    for item in ranked:
        if item.chunk.document_id not in seen:
            seen.add(item.chunk.document_id)
            best.append(item)
    return best


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
