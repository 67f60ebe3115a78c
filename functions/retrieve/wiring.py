"""Builds the retrieve context's service from settings: the only place adapters are chosen.

Handlers call `service()`; it is built on the first call (the first request after a cold start) and
kept for the life of the process. Tests and the local platform hand in a ready service with
`override(...)` and reset with `override(None)`."""

from __future__ import annotations

from functions.retrieve.domain.service import Embedder, SearchService
from ragline.contracts import FusionParams
from ragline.search.factory import search_index
from ragline.search.fields import FilterableFields
from ragline.search.port import SearchIndex
from ragline.settings import Settings, get_settings

_service: SearchService | None = None


def build(
    settings: Settings, *, index: SearchIndex | None = None, embedder: Embedder | None = None
) -> SearchService:
    if embedder is None:
        from functions.retrieve.adapters.embedder import QueryEmbedder
        from ragline.endpoints.embedding import embedding_client

        # A query longer than the model's input is embedded by its beginning, not refused.
        embedder = QueryEmbedder(embedding_client(settings, truncate=True))
    return SearchService(
        index if index is not None else search_index(settings),
        embedder,
        fields=FilterableFields(settings.metadata_fields),
        fusion=FusionParams(
            method=settings.hybrid_fusion,
            k=settings.rrf_k,
            keyword_weight=settings.hybrid_keyword_weight,
            vector_weight=settings.hybrid_vector_weight,
        ),
    )


def service() -> SearchService:
    global _service
    if _service is None:
        _service = build(get_settings())
    return _service


def override(replacement: SearchService | None) -> None:
    """Use `replacement` for every following request (None: build from settings again)."""
    global _service
    _service = replacement
