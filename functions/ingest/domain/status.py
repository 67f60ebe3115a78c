"""Applying the index context's outcomes to the documents table (ingest owns it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ragline.contracts import (
    DocumentFailed,
    DocumentIndexed,
    DocumentStatus,
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

    def apply(self, event: DocumentIndexed | DocumentFailed) -> bool:
        """True if the record changed. Only a `chunked` record of the event's version moves, so a
        duplicate, or a late event about an older version, changes nothing."""
        if isinstance(event, DocumentIndexed):
            return self._documents.update_status(
                event.document_id,
                version=event.version,
                expected={DocumentStatus.CHUNKED},
                status=DocumentStatus.INDEXED,
                updated_at=self._clock(),
                indexed_count=event.indexed_count,
            )
        if event.stage != "index":  # ingest's own failures were applied when they happened
            return False
        return self._documents.update_status(
            event.document_id,
            version=event.version,
            expected={DocumentStatus.CHUNKED},
            status=DocumentStatus.FAILED,
            updated_at=self._clock(),
            failure_reason=f"{event.code}: {event.reason}",
        )
