"""Permanent failures of indexing: retrying the same message would fail the same way, so they are
reported as DocumentFailed (stage index) instead of being retried. Everything else is transient;
`ReplacementNotVisible` is named so that the update saga can retry it by name."""

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


class VersionNotIndexed(IndexingFailed):
    """A version to activate has no chunks in the index: activating it would leave the document
    with no searchable version once the old one is deleted."""

    code = "version_not_indexed"


class RetriesExhausted(IndexingFailed):
    """A transient failure outlived the index queue's last delivery (the message goes to the DLQ)."""

    code = "retries_exhausted"


class ReplacementNotVisible(Exception):
    """Transient: the version that replaces the one to delete is not searchable yet (in OpenSearch,
    while `ragline reindex` runs, chunks written since it began are only in the new index until the
    read alias moves). Deleting now would leave the document with no searchable version; retry."""

    code = "replacement_not_visible"
