"""What the ingest use cases need from the outside world, and the object key layout."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol

from ragline.contracts import (
    Document,
    DocumentStatus,
    EventDetail,
    EventMetadata,
)

# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------


class DocumentRepository(Protocol):
    def create(self, document: Document) -> None:
        """Insert only if no record has this id; else DocumentAlreadyExists."""

    def get(self, document_id: str) -> Document | None:
        """Strongly consistent: a consumer reads the record an event announced right away."""

    def update_status(
        self,
        document_id: str,
        *,
        version: int,
        expected: Collection[DocumentStatus],
        status: DocumentStatus,
        updated_at: datetime,
        chunk_count: int | None = None,
        indexed_count: int | None = None,
        failure_reason: str | None = None,
    ) -> bool:
        """Set the status (and the given fields) iff the record is at `version` in one of the
        `expected` statuses; False when it is not (a duplicate, late or stale event)."""


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; BlobNotFound when there is none."""


class EventPublisher(Protocol):
    def publish(self, detail: EventDetail) -> None: ...


class MessageSender(Protocol):
    def send(self, detail: EventDetail) -> None: ...


# --------------------------------------------------------------------------------------------
# Object keys (one layout, used by writers and, through events, by readers)
# --------------------------------------------------------------------------------------------


def raw_key(document_id: str, version: int) -> str:
    return f"raw/{document_id}/v{version}/original"


def parsed_prefix(document_id: str, version: int) -> str:
    return f"parsed/{document_id}/v{version}/"


def chunks_key(document_id: str, version: int) -> str:
    return parsed_prefix(document_id, version) + "chunks.jsonl"


def text_key(document_id: str, version: int) -> str:
    return parsed_prefix(document_id, version) + "text.txt"


def event_metadata(correlation_id: str, document_id: str, version: int, what: str) -> EventMetadata:
    return EventMetadata(correlation_id=correlation_id, idempotency_key=f"{document_id}:v{version}:{what}")
