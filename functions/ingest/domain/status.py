"""Applying the index context's outcomes to the documents table (ingest owns it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ragline.contracts import (
    DocumentFailed,
    DocumentIndexed,
    DocumentStatus,
    IndexingStarted,
    utcnow,
)

from .ports import (
    DocumentRepository,
)

# --------------------------------------------------------------------------------------------
# Status: apply the index's outcome
# --------------------------------------------------------------------------------------------


class StatusService:
    def __init__(self, documents: DocumentRepository, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._documents = documents
        self._clock = clock

    def apply(self, event: IndexingStarted | DocumentIndexed | DocumentFailed) -> bool:
        """True if the record changed. Only a record of the event's version moves, and only
        forwards: chunked -> embedding (IndexingStarted), chunked/embedding -> indexed or failed.
        So a duplicate, a late event about an older version, or IndexingStarted arriving after
        the outcome (the bus does not keep order) changes nothing."""
        if isinstance(event, IndexingStarted):
            return self._documents.update_status(
                event.document_id,
                version=event.version,
                expected={DocumentStatus.CHUNKED},
                status=DocumentStatus.EMBEDDING,
                updated_at=self._clock(),
            )
        if isinstance(event, DocumentIndexed):
            return self._documents.update_status(
                event.document_id,
                version=event.version,
                expected=_INDEXING,
                status=DocumentStatus.INDEXED,
                updated_at=self._clock(),
                indexed_count=event.indexed_count,
            )
        if event.stage != "index":  # ingest's own failures were applied when they happened
            return False
        return self._documents.update_status(
            event.document_id,
            version=event.version,
            expected=_INDEXING,
            status=DocumentStatus.FAILED,
            updated_at=self._clock(),
            failure_reason=f"{event.code}: {event.reason}",
            failure_code=event.code,
        )


_INDEXING = frozenset({DocumentStatus.CHUNKED, DocumentStatus.EMBEDDING})
