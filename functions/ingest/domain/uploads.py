"""Presigned uploads: the documents API hands out a URL, S3 says when the bytes arrived.

    POST /v1/documents {"upload": true, "size_bytes": n, "content_type": t}
        -> record `awaiting_upload` (no content hash yet) + a presigned PUT for raw/{id}/v1/original
           with Content-Length n, Content-Type t and If-None-Match: * bound into the signature
    client PUTs the bytes to S3
    S3 "Object Created" (EventBridge, default bus) -> uploads queue -> UploadService.complete
        -> checks the size, hashes the object, record `received`, DocumentUploaded (the ingest
           worker does the rest, exactly as for an inline body)
    UploadDeadline (sent by `start` to the uploads queue, delayed to the URL's expiry + grace)
        -> UploadService.expire: a record still `awaiting_upload` is completed if the object is
           there (its event was lost), else failed `upload_expired`; no document waits forever

`complete` and `expire` are idempotent: only an `awaiting_upload` record of the key's version
moves, so a redelivered event or deadline, or the event of an inline body's original (its record
is never awaiting an upload), changes nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Protocol

from ragline.contracts import (
    CreateDocumentRequest,
    Document,
    DocumentStatus,
    DocumentUploaded,
    Principal,
    UploadDeadline,
    UploadTarget,
    new_id,
    utcnow,
)
from ragline.search.fields import FilterableFields

from .collections import CollectionCatalog
from .errors import (
    BlobNotFound,
    ContentTypeRequired,
    IngestError,
    InvalidMetadata,
    SizeMismatch,
    UploadExpired,
    UploadNotScheduled,
    UploadTooLarge,
)
from .ports import DocumentRepository, EventPublisher, event_metadata, fail_document, raw_key

# --------------------------------------------------------------------------------------------
# Ports of this use case
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PresignedPut:
    url: str
    headers: dict[str, str]  # the client must send exactly these


@dataclass(frozen=True)
class ObjectDigest:
    sha256: str  # hex
    size_bytes: int


class UploadStore(Protocol):
    """The raw bucket, as presigned uploads need it."""

    def presign_put(self, key: str, *, content_type: str, size_bytes: int, expires_in_s: int) -> PresignedPut:
        """A URL that accepts one PUT of exactly `size_bytes` bytes of `content_type`, and only
        while nothing is stored under `key`."""

    def digest(self, key: str) -> ObjectDigest:
        """sha256 and size of the stored object, read as a stream; BlobNotFound when there is none."""

    def size(self, key: str) -> int | None:
        """The stored object's size, without reading it; None when there is none."""

    def delete(self, key: str) -> None: ...


class UploadRecords(Protocol):
    def set_content_hash(self, document_id: str, *, version: int, content_hash: str) -> bool:
        """Record the hash iff the record is at `version` and still awaiting its upload."""


class DeadlineQueue(Protocol):
    """The uploads queue, for UploadDeadline messages: each is delivered `delay_s` after it is sent."""

    MAX_DELAY_S: ClassVar[int]  # a longer wait takes several sends

    def send(self, detail: UploadDeadline, *, delay_s: int = 0) -> None: ...


# --------------------------------------------------------------------------------------------
# Use case
# --------------------------------------------------------------------------------------------

_RAW_KEY = re.compile(r"^raw/(?P<id>[^/]+)/v(?P<version>[1-9][0-9]*)/original$")


def parse_raw_key(key: str) -> tuple[str, int] | None:
    """(document id, version) of a key `raw_key` made; None for any other key."""
    match = _RAW_KEY.match(key)
    if match is None or raw_key(match["id"], int(match["version"])) != key:
        return None
    return match["id"], int(match["version"])


class UploadOutcome(StrEnum):
    RECEIVED = "received"  # checked, hashed, `received`, DocumentUploaded published
    IGNORED = "ignored"  # not an upload waited for: another bucket or key, an inline original, a redelivery
    FAILED = "failed"  # too large, not the declared size, or nothing by the deadline: the record is failed
    RESCHEDULED = "rescheduled"  # a deadline not reached yet: sent again with the remaining delay


@dataclass(frozen=True)
class UploadResult:
    outcome: UploadOutcome
    document: Document | None = None
    reason: str | None = None


class UploadService:
    def __init__(
        self,
        documents: DocumentRepository,
        records: UploadRecords,
        raw: UploadStore,
        publisher: EventPublisher,
        *,
        bucket: str,
        max_document_bytes: int,
        url_ttl_s: int,
        deadlines: DeadlineQueue | None,
        grace_s: int,
        collections: CollectionCatalog | None = None,
        metadata_fields: FilterableFields | None = None,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
    ) -> None:
        """`collections` None: only `default` exists (tests of other concerns). `deadlines` None:
        no deadline can be scheduled, so `start` refuses every upload (UploadNotScheduled)."""
        self._documents = documents
        self._collections = collections
        self._metadata_fields = metadata_fields or FilterableFields({})
        self._records = records
        self._raw = raw
        self._publisher = publisher
        self._bucket = bucket
        self._max_bytes = max_document_bytes
        self._ttl_s = url_ttl_s
        self._deadlines = deadlines
        self._grace_s = grace_s
        self._clock = clock
        self._ids = ids

    def start(
        self, request: CreateDocumentRequest, principal: Principal, correlation_id: str
    ) -> tuple[Document, UploadTarget]:
        """The record, awaiting its bytes, and where to PUT them."""
        if problems := self._metadata_fields.document_errors(request.metadata):
            raise InvalidMetadata(problems)
        if request.size_bytes is None or not request.upload:
            raise ValueError("start() takes `upload: true` requests with `size_bytes`")
        if request.size_bytes > self._max_bytes:
            raise UploadTooLarge(request.size_bytes, self._max_bytes)
        if request.content_type is None:
            raise ContentTypeRequired(
                "`content_type` is required with `upload: true`: the upload URL is signed for it"
            )
        if self._collections is not None:
            self._collections.get(request.collection, principal)  # CollectionNotFound
        now = self._clock()
        expires_at = now + timedelta(seconds=self._ttl_s)
        document = Document(
            id=self._ids(),
            version=1,
            collection=request.collection,
            title=request.title,
            content_type=request.content_type,
            content_hash=None,
            size_bytes=request.size_bytes,
            allowed_groups=list(request.allowed_groups),
            tenant=principal.tenant,
            owner=principal.user_id,
            metadata=dict(request.metadata),
            status=DocumentStatus.AWAITING_UPLOAD,
            correlation_id=correlation_id,
            created_at=now,
            updated_at=now,
        )
        # The deadline before the record: if it cannot be scheduled nothing is stored and no URL
        # handed out, and a deadline whose record was never written finds nothing to do.
        deadline = UploadDeadline(
            metadata=event_metadata(
                correlation_id, document.id, document.version, "upload-deadline", tenant=document.tenant
            ),
            document_id=document.id,
            version=document.version,
            due_at=expires_at + timedelta(seconds=self._grace_s),
        )
        try:
            self._schedule(deadline, now)
        except Exception as exc:
            raise UploadNotScheduled("the upload could not be scheduled; try again") from exc
        # The record before the URL: the URL is only handed out for a record that waits for it.
        self._documents.create(document)
        presigned = self._raw.presign_put(
            raw_key(document.id, document.version),
            content_type=document.content_type.value,
            size_bytes=document.size_bytes,
            expires_in_s=self._ttl_s,
        )
        target = UploadTarget(url=presigned.url, headers=presigned.headers, expires_at=expires_at)
        return document, target

    def complete(self, bucket: str, key: str, size_bytes: int) -> UploadResult:
        """S3 stored an object. Transient errors (S3, DynamoDB, EventBridge) propagate so the
        event is retried; everything this decides is safe to decide again."""
        parsed = parse_raw_key(key) if bucket == self._bucket else None
        if parsed is None:
            return UploadResult(UploadOutcome.IGNORED, reason="not an upload key")
        found = self._awaiting(*parsed)
        if isinstance(found, UploadResult):
            return found
        return self._receive(found, key, size_bytes)

    def expire(self, deadline: UploadDeadline) -> UploadResult:
        """A presigned upload's deadline came. Transient errors propagate so the message is retried;
        a redelivery decides the same (or finds the record moved on and does nothing)."""
        now = self._clock()
        if now < deadline.due_at:  # further away than one delay could reach: wait again
            self._schedule(deadline, now)
            return UploadResult(UploadOutcome.RESCHEDULED, reason=f"due at {deadline.due_at.isoformat()}")
        found = self._awaiting(deadline.document_id, deadline.version)
        if isinstance(found, UploadResult):
            return found
        key = raw_key(found.id, found.version)
        size_bytes = self._raw.size(key)
        if size_bytes is not None:  # the bytes are there but their event never came: take them now
            result = self._receive(found, key, size_bytes)
            if result.outcome != UploadOutcome.IGNORED:
                return result
            # Moved on meanwhile (nothing left to do), or the object went away again (expire it).
            found = self._awaiting(deadline.document_id, deadline.version)
            if isinstance(found, UploadResult):
                return found
        return self._fail(found, UploadExpired(deadline.due_at))

    def _schedule(self, deadline: UploadDeadline, now: datetime) -> None:
        if self._deadlines is None:
            raise RuntimeError("no deadline queue is configured (RAGLINE_UPLOADS_QUEUE_URL)")
        remaining_s = math.ceil((deadline.due_at - now).total_seconds())
        self._deadlines.send(deadline, delay_s=max(0, min(remaining_s, self._deadlines.MAX_DELAY_S)))

    def _awaiting(self, document_id: str, version: int) -> Document | UploadResult:
        """The record, if it is at `version` and still awaiting its upload; else why it is ignored."""
        document = self._documents.get(document_id)
        if document is None or document.version != version:
            return UploadResult(UploadOutcome.IGNORED, reason="no record of this version")
        if document.status != DocumentStatus.AWAITING_UPLOAD:
            return UploadResult(UploadOutcome.IGNORED, document, f"already {document.status}")
        return document

    def _receive(self, document: Document, key: str, size_bytes: int) -> UploadResult:
        """Check, hash and announce the object of an `awaiting_upload` record."""
        version = document.version
        if size_bytes > self._max_bytes:
            # Never read it: S3 refuses a PUT whose length differs from the signed one, so this is
            # defence in depth (a PUT made some other way). Delete first: a retry deletes again.
            self._raw.delete(key)
            return self._fail(document, UploadTooLarge(size_bytes, self._max_bytes))
        if size_bytes != document.size_bytes:
            return self._fail(document, SizeMismatch(document.size_bytes, size_bytes))
        try:
            digest = self._raw.digest(key)
        except BlobNotFound:  # deleted since the event: nothing to ingest, the record keeps waiting
            return UploadResult(UploadOutcome.IGNORED, document, "the object is gone")
        if digest.size_bytes != document.size_bytes:
            return self._fail(document, SizeMismatch(document.size_bytes, digest.size_bytes))

        if not self._records.set_content_hash(document.id, version=version, content_hash=digest.sha256):
            return UploadResult(UploadOutcome.IGNORED, document, "status changed while hashing")
        committed = self._documents.update_status(
            document.id,
            version=version,
            expected={DocumentStatus.AWAITING_UPLOAD},
            status=DocumentStatus.RECEIVED,
            updated_at=self._clock(),
        )
        if not committed:  # a concurrent delivery of the same event got there first
            return UploadResult(UploadOutcome.IGNORED, document, "status changed while hashing")
        try:
            self._publisher.publish(
                DocumentUploaded(
                    metadata=event_metadata(
                        document.correlation_id, document.id, version, "uploaded", tenant=document.tenant
                    ),
                    document_id=document.id,
                    version=version,
                    collection=document.collection,
                    raw_key=key,
                    content_type=document.content_type,
                )
            )
        except Exception:
            # Undo the commit so the retry of this event finds the record waiting and publishes
            # again (if the event did go out, the worker skips a record that is not `received`).
            self._documents.update_status(
                document.id,
                version=version,
                expected={DocumentStatus.RECEIVED},
                status=DocumentStatus.AWAITING_UPLOAD,
                updated_at=self._clock(),
            )
            raise
        return UploadResult(
            UploadOutcome.RECEIVED, document.model_copy(update={"content_hash": digest.sha256})
        )

    def _fail(self, document: Document, error: IngestError) -> UploadResult:
        fail_document(
            self._documents,
            self._publisher,
            document,
            error,
            expected={DocumentStatus.AWAITING_UPLOAD},
            correlation_id=document.correlation_id,
            what="failed-upload",
            now=self._clock(),
        )
        return UploadResult(UploadOutcome.FAILED, document, f"{error.code}: {error}")
