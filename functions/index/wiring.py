"""Builds index's adapters and service from settings, once per container.

The handler calls `index_service()`: built on first use from `get_settings()` (the search index is
created if missing, once) and kept for the container's life. Tests call `build(settings, ...)` with
a moto-backed S3 client, a fake embedder and an in-memory or LanceDB index; nothing is patched."""

from __future__ import annotations

from functools import cache
from typing import Any

from functions.index.adapters.chunk_store import S3ChunkSource
from functions.index.domain.service import Embedder, EventPublisher, IndexService
from ragline import aws
from ragline.events import EventBridgePublisher
from ragline.search.port import SearchIndex
from ragline.settings import Settings, get_settings

EMBED_BATCH_SIZE = 32


def default_embedder(settings: Settings) -> Embedder:
    from functions.index.adapters.embedder import EndpointEmbedder
    from ragline.endpoints.embedding import embedding_client

    # Chunks fit the model by construction; the context appended to each (see embedding_input) may not.
    return EndpointEmbedder(embedding_client(settings, truncate=True))


def default_index(settings: Settings) -> SearchIndex:
    from ragline.search.factory import search_index

    return search_index(settings)


def build(
    settings: Settings,
    *,
    s3: Any = None,
    events: Any = None,
    embedder: Embedder | None = None,
    index: SearchIndex | None = None,
    publisher: EventPublisher | None = None,
    batch_size: int = EMBED_BATCH_SIZE,
) -> IndexService:
    """Every argument replaces what would be built from settings."""
    index = index or default_index(settings)
    index.ensure_index()
    return IndexService(
        S3ChunkSource(s3 or aws.client("s3", settings), settings.parsed_bucket),
        embedder or default_embedder(settings),
        index,
        publisher or EventBridgePublisher(events or aws.client("events", settings), settings.event_bus),
        dimension=settings.embedding_dimension,
        batch_size=batch_size,
    )


@cache
def index_service() -> IndexService:
    return build(get_settings())
