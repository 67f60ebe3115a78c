"""What can go wrong in a search, as the API reports it."""

from __future__ import annotations


class EmbeddingUnavailable(Exception):
    """The query could not be embedded for now (endpoint down, throttled, or its circuit open)."""

    code = "embedding_unavailable"
