"""What the ingest use cases need from the outside world, and the object key layout."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ragline.contracts import Collection as CollectionRecord
from ragline.contracts import (
    Document,
    DocumentFailed,
    DocumentStatus,
    EventDetail,
    EventMetadata,
    IndexedVersion,
    Operation,
)

# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------
from .errors import IngestError


@dataclass(frozen=True)
class ContentClaim:
    """The document that holds a content key (see `content_key`): at most one per key."""

    key: str
    document_id: str
    version: int


@dataclass(frozen=True)
class DocumentPage:
    """One read of a listing, in order (newest first). `last_position` is where the read stopped
    (None: the listing is exhausted); reading again from it continues after it."""

    documents: list[Document]
    last_position: str | None


class ContentClaimed(Exception):  # noqa: N818 (a signal between adapter and use case, not an error)
    """The content key is held by another document than the one the caller meant to replace."""


class DocumentRepository(Protocol):
    def create(
        self, document: Document, *, content_key: str | None = None, replacing: ContentClaim | None = None
    ) -> None:
        """Insert only if no record has this id (else DocumentAlreadyExists), and, atomically with it,
        claim `content_key` for it: the key must be free, or still held by `replacing` (a failed or
        superseded document); else ContentClaimed and nothing is written."""

    def find_by_content(self, content_key: str) -> ContentClaim | None: ...

    def list_page(
        self,
        *,
        tenant: str | None,
        collection: str | None,
        status: DocumentStatus | None,
        after: str | None,
        limit: int,
    ) -> DocumentPage:
        """Up to `limit` of the tenant's documents (one collection's, when given) newest first,
        starting after the position `after`; `status` filters. Documents carry no position: it is
        `listing_position(document)`."""

    def get(self, document_id: str) -> Document | None:
        """Strongly consistent: a consumer reads the record an event announced right away."""

    def scan(self) -> Iterator[Document]:
        """Every document, in no order (the reconciler's full pass; content claims are not documents)."""

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
        failure_code: str | None = None,
    ) -> bool:
        """Set the status (and the given fields) iff the record is at `version` in one of the
        `expected` statuses; False when it is not (a duplicate, late or stale event). The time the
        record entered `status` is kept in `stage_times[status]` (= `updated_at`)."""

    def claim_operation(self, document_id: str, operation_id: str, *, holder: str | None) -> bool:
        """Record `operation_id` on the document iff it still exists and holds no operation or
        `holder` (an operation that has finished); False otherwise."""

    def mark_deleting(
        self, document_id: str, operation_id: str, *, expected: DocumentStatus, updated_at: datetime
    ) -> bool:
        """Status `expected` → deleting, iff the document is held by `operation_id`."""

    def restore_status(
        self, document_id: str, operation_id: str, *, status: DocumentStatus, updated_at: datetime
    ) -> bool:
        """deleting → `status` and release the document, iff held by `operation_id` (compensation)."""

    def reserve_version(
        self, document_id: str, operation_id: str, *, version: int, reserved: int, updated_at: datetime
    ) -> bool:
        """Reserve version `reserved` on the document (the update saga) iff `operation_id` holds it,
        it is `indexed` at `version` and no other version is reserved; idempotent."""

    def switch_version(self, document: Document, operation_id: str, *, previous: int) -> bool:
        """The document becomes `document` (its new version, groups, metadata, title, counts,
        status) iff `operation_id` holds it at `previous` with `document.version` reserved; the
        reservation goes, the hold stays (Complete releases it)."""

    def release(self, document_id: str, operation_id: str, *, version: int) -> bool:
        """Drop the hold of `operation_id` and any reservation, iff it holds the document at `version`."""

    def move_claim(self, document_id: str, *, version: int, old_key: str | None, new_key: str | None) -> None:
        """Point the content claim at the document's new content (best effort, idempotent)."""

    def delete(
        self,
        document_id: str,
        operation_id: str,
        *,
        content_key: str | None,
        announce: PendingEvent | None = None,
    ) -> None:
        """Delete the content claim `content_key` if this document holds it, then the document if
        `operation_id` holds it, writing `announce` in the same transaction as the document's
        delete (an outbox: the event is owed from that moment). Idempotent: what is already gone is
        not an error."""

    def pending_events(self) -> list[PendingEvent]:
        """Events owed (written by `delete`, not yet settled), oldest first."""

    def settle(self, key: str) -> None:
        """The event `key` was published: forget it. Idempotent."""


@dataclass(frozen=True)
class PendingEvent:
    """An event a saga owes (the outbox): `detail` is the event's JSON, `key` its idempotency key."""

    key: str
    detail_type: str
    detail: str
    written_at: datetime


class OperationRepository(Protocol):
    def create(self, record: OperationRecord) -> bool:
        """Insert; False (nothing written) when an operation with this id exists."""

    def get(self, operation_id: str) -> OperationRecord | None: ...

    def save(self, record: OperationRecord) -> None:
        """Write the whole record (one saga step at a time changes it)."""


class IndexMaintenance(Protocol):
    """The index context's maintenance commands (its only writer; see the reconciler)."""

    def inventory(self) -> Iterator[IndexedVersion]:
        """Every (document, version) the index holds with its chunk counts, page by page."""

    def delete_vectors(self, document_id: str, version: int | None) -> int:
        """Delete one version's chunks, or every version's (None); returns how many went."""

    def restore_version(self, document_id: str, version: int, chunks_key: str, chunk_count: int) -> int:
        """Write the version from its chunk file and make it searchable; returns its chunk count.
        Raises RestoreFailed when the chunk file is missing or invalid."""


class RestoreFailed(Exception):
    """The index could not restore a version for a reason retrying will not fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ExecutionStarter(Protocol):
    def start(self, name: str, payload: dict[str, Any]) -> None:
        """Start the state machine's execution `name` with `payload`; one that exists (running with
        this input, or finished) counts as started."""


@dataclass
class OperationRecord:
    """An operation as stored: the API's view plus who may see it, when it expires, and what the
    saga noted about the document when it took it (`document`, for compensation and retries)."""

    operation: Operation
    tenant: str | None
    requester: str
    expires_at: datetime
    correlation_id: str
    document: dict[str, Any] = field(default_factory=dict)


class CollectionRepository(Protocol):
    def create(self, tenant: str | None, collection: CollectionRecord) -> None:
        """Insert only if the tenant has no collection of that name; else CollectionAlreadyExists."""

    def get(self, tenant: str | None, name: str) -> CollectionRecord | None: ...

    def list(self, tenant: str | None) -> list[CollectionRecord]:
        """The tenant's stored collections, by name."""


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`, with all its versions; returns how many versions went."""

    def get(self, key: str) -> bytes:
        """The object's bytes; BlobNotFound when there is none."""


class EventPublisher(Protocol):
    def publish(self, detail: EventDetail) -> None: ...


class MessageSender(Protocol):
    def send(self, detail: EventDetail) -> None: ...


# --------------------------------------------------------------------------------------------
# Object keys (one layout, used by writers and, through events, by readers)
# --------------------------------------------------------------------------------------------


def raw_prefix(document_id: str) -> str:
    return f"raw/{document_id}/"


def document_parsed_prefix(document_id: str) -> str:
    return f"parsed/{document_id}/"


def raw_version_prefix(document_id: str, version: int) -> str:
    return raw_prefix(document_id) + f"v{version}/"


def raw_key(document_id: str, version: int) -> str:
    return raw_version_prefix(document_id, version) + "original"


def source_raw_key(document: Document) -> str:
    """The original that holds a document's content: its own version's, or the one a metadata-only
    update reused (`source_version`)."""
    return raw_key(document.id, document.source_version or document.version)


def parsed_prefix(document_id: str, version: int) -> str:
    return f"parsed/{document_id}/v{version}/"


def chunks_key(document_id: str, version: int) -> str:
    return parsed_prefix(document_id, version) + "chunks.jsonl"


def text_key(document_id: str, version: int) -> str:
    return parsed_prefix(document_id, version) + "text.txt"


def content_key(tenant: str | None, collection: str, content_hash: str, allowed_groups: Iterable[str]) -> str:
    """Identical content for the same audience: the tenant, the collection, the bytes' sha256 and
    the set of groups that may see it. Different groups make a different document on purpose: a
    re-upload meant for a new audience must not come back with the old audience's access list."""
    groups = hashlib.sha256("\n".join(sorted(set(allowed_groups))).encode()).hexdigest()[:32]
    return f"hash#{tenant or ''}#{collection}#{content_hash}#{groups}"


def claim_key(
    tenant: str | None, collection: str, content_hash: str | None, allowed_groups: Iterable[str]
) -> str | None:
    """The content key a document holds, if it has content (a hash) to claim."""
    return content_key(tenant, collection, content_hash, allowed_groups) if content_hash else None


def listing_position(document: Document) -> str:
    """Where a document sits in listings: creation time (fixed-width UTC, so it sorts as text), then id."""
    return f"{document.created_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{document.id}"


def event_metadata(
    correlation_id: str, document_id: str, version: int, what: str, *, tenant: str | None = None
) -> EventMetadata:
    """`tenant`: the document's; notify delivers an event only to subscriptions of that tenant."""
    return EventMetadata(
        correlation_id=correlation_id, idempotency_key=f"{document_id}:v{version}:{what}", tenant=tenant
    )


def fail_document(
    documents: DocumentRepository,
    publisher: EventPublisher,
    document: Document,
    error: IngestError,
    *,
    expected: Collection[DocumentStatus],
    correlation_id: str,
    what: str,
    now: datetime,
) -> None:
    """Mark a document failed and say so. The event goes first: if publishing fails, the caller's
    message is retried and the retry still finds the record in an `expected` status."""
    publisher.publish(
        DocumentFailed(
            metadata=event_metadata(
                correlation_id, document.id, document.version, what, tenant=document.tenant
            ),
            document_id=document.id,
            version=document.version,
            stage="ingest",
            code=error.code,
            reason=str(error),
        )
    )
    documents.update_status(
        document.id,
        version=document.version,
        expected=expected,
        status=DocumentStatus.FAILED,
        updated_at=now,
        failure_reason=f"{error.code}: {error}",
        failure_code=error.code,
    )
