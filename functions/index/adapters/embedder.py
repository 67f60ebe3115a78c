"""The shared embedding client as index's `Embedder`: the endpoint's own verdict on whether a
failure is worth retrying becomes the domain's (permanent -> EmbeddingRejected; else re-raised)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from functions.index.domain.errors import EmbeddingRejected
from ragline.endpoints.errors import EndpointError


class EndpointEmbedder:
    def __init__(self, client: Any) -> None:
        self._client = client

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            return self._client.embed(texts)
        except EndpointError as exc:
            if exc.retryable:
                raise
            raise EmbeddingRejected(str(exc)) from exc
