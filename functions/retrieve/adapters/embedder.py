"""The embedding endpoint as the search use case needs it: a failure that may pass (5xx,
throttling, timeout, open circuit) becomes the domain's EmbeddingUnavailable, so the domain can
degrade to keyword search without knowing about endpoints."""

from __future__ import annotations

from collections.abc import Sequence

from functions.retrieve.domain.errors import EmbeddingUnavailable
from functions.retrieve.domain.service import Embedder
from ragline.endpoints import EndpointError


class QueryEmbedder:
    def __init__(self, client: Embedder) -> None:
        self._client = client

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            return self._client.embed(texts)
        except EndpointError as exc:
            if exc.retryable:
                raise EmbeddingUnavailable(f"{exc.code}: {exc.message}") from exc
            raise
