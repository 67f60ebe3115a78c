"""Ingest's use cases: accept a document, chunk it, apply the index's outcome.

Plain Python over ports (Protocols below); adapters/ implements them over S3, DynamoDB, EventBridge
and SQS, and tests pass in-memory fakes. Ingest owns the documents table and both buckets.

Status transitions (every write is conditional on the version and the expected current status):

    received --chunk--> chunked --DocumentIndexed--> indexed
        |                  |
        +--parse error-----+--DocumentFailed (index)--> failed
        +--event not published (API)------------------> failed
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from ragline.contracts import (
    Chunk,
    ChunksReady,
    ContentType,
    CreateDocumentRequest,
    Document,
    DocumentFailed,
    DocumentIndexed,
    DocumentStatus,
    DocumentUploaded,
    EventDetail,
    EventMetadata,
    Principal,
    new_id,
    utcnow,
)
from ragline.identity import can_see

from .chunking import Chunker
from .errors import (
    BlobNotFound,
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    EventPublishFailed,
    IngestError,
    ParseError,
    UnsupportedBody,
)
from .parsing import parse

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


def _metadata(correlation_id: str, document_id: str, version: int, what: str) -> EventMetadata:
    return EventMetadata(correlation_id=correlation_id, idempotency_key=f"{document_id}:v{version}:{what}")


# --------------------------------------------------------------------------------------------
# API: accept and show documents
# --------------------------------------------------------------------------------------------


class DocumentService:
    def __init__(
        self,
        documents: DocumentRepository,
        raw: BlobStore,
        publisher: EventPublisher,
        *,
        max_inline_bytes: int,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
    ) -> None:
        self._documents = documents
        self._raw = raw
        self._publisher = publisher
        self._max_inline_bytes = max_inline_bytes
        self._clock = clock
        self._ids = ids

    def create(self, request: CreateDocumentRequest, principal: Principal, correlation_id: str) -> Document:
        """Store the original, then the record, then announce it: a record never points at a
        missing object, and an event never at a missing record."""
        if request.text is None:
            raise UnsupportedBody("only inline `text` bodies are accepted yet")
        data = request.text.encode("utf-8")
        if len(data) > self._max_inline_bytes:
            raise DocumentTooLarge(len(data), self._max_inline_bytes)
        now = self._clock()
        document = Document(
            id=self._ids(),
            version=1,
            collection=request.collection,
            title=request.title,
            content_type=request.content_type or ContentType.MARKDOWN,
            content_hash=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            allowed_groups=list(request.allowed_groups),
            tenant=principal.tenant,
            owner=principal.user_id,
            metadata=dict(request.metadata),
            status=DocumentStatus.RECEIVED,
            correlation_id=correlation_id,
            created_at=now,
            updated_at=now,
        )
        key = raw_key(document.id, document.version)
        self._raw.put(key, data, f"{document.content_type.value}; charset=utf-8")
        self._documents.create(document)
        uploaded = DocumentUploaded(
            metadata=_metadata(correlation_id, document.id, document.version, "uploaded"),
            document_id=document.id,
            version=document.version,
            collection=document.collection,
            raw_key=key,
            content_type=document.content_type,
        )
        try:
            self._publisher.publish(uploaded)
        except Exception as exc:  # whatever the cause, no worker will hear of this document
            reason = f"{EventPublishFailed.code}: {exc}"
            self._documents.update_status(
                document.id,
                version=document.version,
                expected={DocumentStatus.RECEIVED},
                status=DocumentStatus.FAILED,
                updated_at=self._clock(),
                failure_reason=reason,
            )
            raise EventPublishFailed(
                "the document was stored but could not be queued; upload it again"
            ) from exc
        return document

    def get(self, document_id: str, principal: Principal) -> Document:
        document = self._documents.get(document_id)
        if document is None or not _visible(document, principal):
            raise DocumentNotFound(document_id)
        return document


def _visible(document: Document, principal: Principal) -> bool:
    if document.owner == principal.user_id and document.tenant == principal.tenant:
        return True
    return can_see(principal, document.allowed_groups, document.tenant)


# --------------------------------------------------------------------------------------------
# Worker: parse and chunk an uploaded document
# --------------------------------------------------------------------------------------------


class ChunkOutcome(StrEnum):
    CHUNKED = "chunked"
    RESENT = "resent"  # already chunked: the claim check is sent again (the send may have failed)
    SKIPPED = "skipped"  # duplicate, stale or unknown: nothing to do
    FAILED = "failed"  # permanent: the document cannot be parsed; DocumentFailed was published


@dataclass(frozen=True)
class ChunkResult:
    outcome: ChunkOutcome
    chunk_count: int = 0
    reason: str | None = None


class ChunkingService:
    def __init__(
        self,
        documents: DocumentRepository,
        raw: BlobStore,
        parsed: BlobStore,
        publisher: EventPublisher,
        index_queue: MessageSender,
        chunker: Chunker,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._documents = documents
        self._raw = raw
        self._parsed = parsed
        self._publisher = publisher
        self._index_queue = index_queue
        self._chunker = chunker
        self._clock = clock

    def process(self, event: DocumentUploaded) -> ChunkResult:
        """Idempotent: safe to call again for the same event (SQS delivers at least once).
        Transient errors (storage, network) propagate so the message is retried."""
        document = self._documents.get(event.document_id)
        if document is None or document.version != event.version:
            return ChunkResult(ChunkOutcome.SKIPPED, reason="no record of this version")
        correlation_id = event.metadata.correlation_id
        if document.status == DocumentStatus.CHUNKED:
            # The status write is the commit point; the send after it may not have happened.
            self._send_chunks_ready(document, document.chunk_count or 0, correlation_id)
            return ChunkResult(ChunkOutcome.RESENT, chunk_count=document.chunk_count or 0)
        if document.status != DocumentStatus.RECEIVED:
            return ChunkResult(ChunkOutcome.SKIPPED, reason=f"already {document.status}")

        try:
            parsed = parse(self._raw.get(event.raw_key), document.content_type)
            spans = self._chunker.chunk(parsed.text, parsed.content_type)
            if not spans:
                raise EmptyDocument("document has no text to index")
        except (ParseError, BlobNotFound) as exc:
            self._fail(document, exc, correlation_id)
            return ChunkResult(ChunkOutcome.FAILED, reason=str(exc))

        chunks = [
            Chunk(
                document_id=document.id,
                version=document.version,
                ordinal=ordinal,
                collection=document.collection,
                title=document.title,
                text=span.text,
                token_count=span.token_count,
                heading_path=list(span.heading_path),
                char_start=span.char_start,
                char_end=span.char_end,
                allowed_groups=document.allowed_groups,
                tenant=document.tenant,
                metadata=document.metadata,
            )
            for ordinal, span in enumerate(spans)
        ]
        self._parsed.put(
            text_key(document.id, document.version), parsed.text.encode("utf-8"), "text/plain; charset=utf-8"
        )
        self._parsed.put(
            chunks_key(document.id, document.version), encode_chunks(chunks), "application/x-ndjson"
        )
        committed = self._documents.update_status(
            document.id,
            version=document.version,
            expected={DocumentStatus.RECEIVED},
            status=DocumentStatus.CHUNKED,
            updated_at=self._clock(),
            chunk_count=len(chunks),
        )
        if not committed:  # a concurrent delivery of the same event got there first
            return ChunkResult(ChunkOutcome.SKIPPED, reason="status changed while chunking")
        self._send_chunks_ready(document, len(chunks), correlation_id)
        return ChunkResult(ChunkOutcome.CHUNKED, chunk_count=len(chunks))

    def _send_chunks_ready(self, document: Document, chunk_count: int, correlation_id: str) -> None:
        self._index_queue.send(
            ChunksReady(
                metadata=_metadata(correlation_id, document.id, document.version, "chunks-ready"),
                document_id=document.id,
                version=document.version,
                collection=document.collection,
                chunks_key=chunks_key(document.id, document.version),
                chunk_count=chunk_count,
            )
        )

    def _fail(self, document: Document, error: IngestError, correlation_id: str) -> None:
        # Published before the status write: if the publish fails the message is retried, and
        # the retry still finds the record `received` and gets here again.
        self._publisher.publish(
            DocumentFailed(
                metadata=_metadata(correlation_id, document.id, document.version, "failed-ingest"),
                document_id=document.id,
                version=document.version,
                stage="ingest",
                code=error.code,
                reason=str(error),
            )
        )
        self._documents.update_status(
            document.id,
            version=document.version,
            expected={DocumentStatus.RECEIVED},
            status=DocumentStatus.FAILED,
            updated_at=self._clock(),
            failure_reason=f"{error.code}: {error}",
        )


def encode_chunks(chunks: Sequence[Chunk]) -> bytes:
    return "".join(chunk.model_dump_json() + "\n" for chunk in chunks).encode("utf-8")


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
