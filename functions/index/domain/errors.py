"""Permanent failures of indexing: retrying the same message would fail the same way, so they are
reported as DocumentFailed (stage index) instead of being retried. Everything else is transient."""

from __future__ import annotations


class IndexingFailed(Exception):
    code = "index_failed"


class ChunksNotFound(IndexingFailed):
    code = "chunks_not_found"


class ChunksInvalid(IndexingFailed):
    """The chunk file does not parse, or does not match the message that pointed at it."""

    code = "chunks_invalid"


class DimensionMismatch(IndexingFailed):
    code = "dimension_mismatch"


class EmbeddingRejected(IndexingFailed):
    """The embedding endpoint refused the input (a 4xx, a malformed answer): not worth retrying."""

    code = "embedding_rejected"


class RetriesExhausted(IndexingFailed):
    """A transient failure outlived the index queue's last delivery (the message goes to the DLQ)."""

    code = "retries_exhausted"
