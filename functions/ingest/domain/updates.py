"""Updating a document: the request (PUT /v1/documents/{id}) and ingest's steps of the
document-update saga (docs/saga.md), on the delete saga's pattern (`deletion.py`).

The request stores the new original under the new version's key (a metadata-only update reuses the
current original), records an operation holding the document and starts the state machine, whose
execution name is the operation id. One operation holds a document at a time: an update while any
other operation is in flight is refused (`DocumentBusy`, 409) rather than interleaved; a delete
requested during an update waits its turn (MarkDeleting retries). With an Idempotency-Key the
operation id is derived from (tenant, user, key, document), so a retried request starts nothing new.

SwitchVersion is the pivot: before it, a failure is compensated (the new version's vectors removed by
index, the reservation released here: the document stays at its version, searchable, unchanged);
after it, the steps are retried, and a final failure leaves the document at its new version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ragline.contracts import (
    ContentType,
    Document,
    DocumentStatus,
    DocumentUpdated,
    Operation,
    OperationKind,
    Principal,
    UpdateDocumentRequest,
    new_id,
    utcnow,
)
from ragline.saga import (
    ACTIVATE,
    COMPLETE,
    DELETE_OLD_VECTORS,
    INDEX_VERSION,
    INVALIDATE_CACHE,
    PARSE_AND_CHUNK,
    RESERVE_VERSION,
    SWITCH_VERSION,
)
from ragline.search.fields import FilterableFields

from .detect import detect_content_type
from .documents import inline_bytes, media_type
from .errors import (
    DocumentBusy,
    DocumentNotFound,
    DocumentTooLarge,
    InvalidMetadata,
    VersionConflict,
)
from .operations import OperationRequests, SagaSteps, progress, running_holder, visible
from .pipeline import VersionChunker
from .ports import (
    BlobStore,
    DocumentRepository,
    EventPublisher,
    ExecutionStarter,
    OperationRecord,
    OperationRepository,
    chunks_key,
    claim_key,
    event_metadata,
    parsed_prefix,
    raw_key,
    raw_version_prefix,
    source_raw_key,
)


class UpdateRequests(OperationRequests):
    """The API's side: start an update."""

    kind = OperationKind.UPDATE

    def __init__(
        self,
        documents: DocumentRepository,
        operations: OperationRepository,
        raw: BlobStore,
        executions: ExecutionStarter | None,
        *,
        ttl: timedelta,
        max_inline_bytes: int,
        metadata_fields: FilterableFields | None = None,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
    ) -> None:
        super().__init__(documents, operations, executions, ttl=ttl, clock=clock, ids=ids)
        self._raw = raw
        self._max_inline_bytes = max_inline_bytes
        self._metadata_fields = metadata_fields or FilterableFields({})

    def update(
        self,
        document_id: str,
        request: UpdateDocumentRequest,
        principal: Principal,
        correlation_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> Operation:
        self._require_executions()
        own, existing = self._own_id(principal, idempotency_key, document_id)
        if existing is not None:
            return self._started(existing)
        if request.metadata is not None and (
            problems := self._metadata_fields.document_errors(request.metadata)
        ):
            raise InvalidMetadata(problems)
        data = None
        if request.text is not None or request.content_base64 is not None:
            data = inline_bytes(request)  # type: ignore[arg-type]  (the same two body fields)
            if len(data) > self._max_inline_bytes:
                raise DocumentTooLarge(len(data), self._max_inline_bytes)
        document = self._documents.get(document_id)
        if document is None or not visible(document, principal):
            raise DocumentNotFound(document_id)
        holder = document.operation_id
        # A retry of this very request (its key) finds the document held by its own operation.
        held = running_holder(self._operations, document) if holder != own else None
        if held is not None:
            raise DocumentBusy(
                f"document {document_id} is held by {held.operation.kind} operation {holder}: "
                "send the update again once it has finished"
            )
        if document.status != DocumentStatus.INDEXED:
            raise DocumentBusy(
                f"document {document_id} is {document.status}: only an indexed document is updated"
            )
        if not self._documents.claim_operation(document_id, own, holder=holder):
            raise DocumentBusy(f"document {document_id} is held by another operation")
        version = document.version + 1
        content_type = document.content_type
        if data is not None:
            content_type = detect_content_type(data, request.content_type)
            original = raw_key(document_id, version)
            self._raw.put(original, data, media_type(content_type))
        else:
            original = source_raw_key(document)
        noted = {
            "previous": document.version,
            "version": version,
            "collection": document.collection,
            "title": request.title if request.title is not None else document.title,
            "allowed_groups": list(request.allowed_groups)
            if request.allowed_groups is not None
            else list(document.allowed_groups),
            "metadata": dict(request.metadata) if request.metadata is not None else dict(document.metadata),
            "content_type": content_type.value,
            "content_hash": hashlib.sha256(data).hexdigest() if data is not None else document.content_hash,
            "size_bytes": len(data) if data is not None else document.size_bytes,
            "raw_key": original,
            "source_version": None if data is not None else (document.source_version or document.version),
            "new_original": data is not None,
        }
        return self._open(
            own,
            document_id,
            principal,
            correlation_id,
            first_step=RESERVE_VERSION,
            version=version,
            noted=noted,
        )

    def _payload(self) -> dict[str, Any]:
        return {"kind": OperationKind.UPDATE.value}

    def _not_started(self, record: OperationRecord) -> None:
        self._documents.release(
            record.operation.document_id, record.operation.operation_id, version=record.document["previous"]
        )


def new_version(document: Document, noted: dict[str, Any], **changes: Any) -> Document:
    """The document at the version the update builds, as `noted` at the request."""
    return document.model_copy(
        update={
            "version": noted["version"],
            "title": noted["title"],
            "allowed_groups": list(noted["allowed_groups"]),
            "metadata": dict(noted["metadata"]),
            "content_type": ContentType(noted["content_type"]),
            "content_hash": noted["content_hash"],
            "size_bytes": noted["size_bytes"],
            "source_version": noted["source_version"],
            **changes,
        }
    )


class UpdateSaga(SagaSteps):
    """Ingest's steps of the document-update state machine (see SagaSteps); the execution's state
    also has `kind`, and what earlier steps returned: `update` from ReserveVersion, `chunks`,
    `indexed`, `activated`, `old_vectors`."""

    def __init__(
        self,
        documents: DocumentRepository,
        operations: OperationRepository,
        raw: BlobStore,
        parsed: BlobStore,
        publisher: EventPublisher,
        versions: VersionChunker,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(documents, operations, raw, parsed, publisher, clock=clock)
        self._versions = versions

    def _held(self, record: OperationRecord) -> Document:
        document_id = record.operation.document_id
        document = self._documents.get(document_id)
        if document is None:
            raise DocumentNotFound(document_id)
        if document.operation_id != record.operation.operation_id:
            raise DocumentBusy(f"document {document_id} is held by operation {document.operation_id}")
        return document

    # ------------------------------------------------------------------ forward

    def reserve_version(self, state: dict[str, Any]) -> dict[str, Any]:
        """Reserve the new version on the document (conditional write); returns the update's plan."""
        record = self._record(state)
        noted = record.document
        self._operations.save(progress(record, self._clock(), current=RESERVE_VERSION))
        document = self._held(record)
        if not self._documents.reserve_version(
            document.id,
            record.operation.operation_id,
            version=noted["previous"],
            reserved=noted["version"],
            updated_at=self._clock(),
        ):
            raise VersionConflict(
                f"document {document.id} is {document.status} at version {document.version}, not indexed at "
                f"{noted['previous']} with nothing else reserved"
            )
        self._operations.save(progress(record, self._clock(), done=RESERVE_VERSION, current=PARSE_AND_CHUNK))
        return {"previous": noted["previous"], "version": noted["version"], "collection": noted["collection"]}

    def parse_and_chunk(self, state: dict[str, Any]) -> dict[str, Any]:
        """The ingest worker's parse and chunk, for the new version: its chunk file."""
        record = self._record(state)
        noted = record.document
        document = new_version(self._held(record), noted)
        count = self._versions.chunk_version(document, noted["raw_key"])
        self._operations.save(progress(record, self._clock(), done=PARSE_AND_CHUNK, current=INDEX_VERSION))
        return {
            "chunks_key": chunks_key(document.id, document.version),
            "chunk_count": count,
            "completed_at": self._clock().isoformat(),
        }

    def check_switched(self, state: dict[str, Any]) -> dict[str, Any]:
        """After SwitchVersion failed: did its write happen (its answer lost)? Then the update goes
        on; otherwise it is compensated."""
        record = self._record(state)
        document = self._documents.get(record.operation.document_id)
        switched = (
            document is not None
            and document.version == record.document["version"]
            and document.operation_id == record.operation.operation_id
        )
        return {"switched": switched}

    def switch_version(self, state: dict[str, Any]) -> None:
        """The pivot: the new version becomes the document's (conditional write), with its groups,
        metadata, title and counts, `indexed`; the content claim follows its content."""
        record = self._record(state)
        noted = record.document
        now = self._clock()
        steps = [(INDEX_VERSION, state.get("indexed")), (ACTIVATE, state.get("activated"))]
        for step, result in steps:
            done_at = (result or {}).get("completed_at")
            progress(
                record,
                now,
                done=step,
                done_at=datetime.fromisoformat(done_at) if done_at else None,
                current=SWITCH_VERSION,
            )
        self._operations.save(record)
        document = self._held(record)
        old = document
        if document.version != noted["version"]:
            chunk_count = int((state.get("chunks") or {}).get("chunk_count") or 0)
            indexed = int((state.get("activated") or {}).get("active") or chunk_count)
            switched = new_version(
                document,
                noted,
                status=DocumentStatus.INDEXED,
                chunk_count=chunk_count,
                indexed_count=indexed,
                stage_times={**document.stage_times, DocumentStatus.INDEXED.value: now},
                updated_at=now,
            )
            if not self._documents.switch_version(
                switched, record.operation.operation_id, previous=noted["previous"]
            ):
                raise VersionConflict(
                    f"document {document.id} is not at version {noted['previous']} with {noted['version']} reserved"
                )
        self._documents.move_claim(
            old.id,
            version=noted["version"],
            old_key=claim_key(old.tenant, old.collection, old.content_hash, old.allowed_groups)
            if old.version == noted["previous"]
            else None,
            new_key=claim_key(old.tenant, old.collection, noted["content_hash"], noted["allowed_groups"]),
        )
        self._operations.save(
            progress(record, self._clock(), done=SWITCH_VERSION, current=DELETE_OLD_VECTORS)
        )

    def invalidate_cache(self, state: dict[str, Any]) -> None:
        """DocumentUpdated: the context's answer-cache rule drops the collection's cached answers."""
        record = self._record(state)
        noted = record.document
        done_at = (state.get("old_vectors") or {}).get("completed_at")
        self._operations.save(
            progress(
                record,
                self._clock(),
                done=DELETE_OLD_VECTORS,
                done_at=datetime.fromisoformat(done_at) if done_at else None,
                current=INVALIDATE_CACHE,
            )
        )
        document_id = record.operation.document_id
        self._publisher.publish(
            DocumentUpdated(
                metadata=event_metadata(
                    record.correlation_id, document_id, noted["version"], "updated", tenant=record.tenant
                ),
                document_id=document_id,
                version=noted["version"],
                previous_version=noted["previous"],
                collection=noted["collection"],
            )
        )
        self._operations.save(progress(record, self._clock(), done=INVALIDATE_CACHE, current=COMPLETE))

    def complete(self, state: dict[str, Any]) -> None:
        """The document released (another update may start), the operation succeeded."""
        record = self._record(state)
        self._documents.release(
            record.operation.document_id, record.operation.operation_id, version=record.document["version"]
        )
        self._succeed(record, done=COMPLETE, version=record.document["version"])

    # ------------------------------------------------------------------ compensation and failure

    def release_version(self, state: dict[str, Any]) -> dict[str, Any]:
        """Compensation (after RemoveNewVersion): the new version's objects removed, the reservation
        and the hold released; the document stays at its version, unchanged. A no-op once released
        (the objects go first, while the hold keeps another update from reusing the version)."""
        record = self._record(state)
        noted = record.document
        document_id = record.operation.document_id
        document = self._documents.get(document_id)
        if document is None or document.operation_id != record.operation.operation_id:
            return {"released": False}
        if document.version != noted["previous"]:
            raise VersionConflict(f"document {document_id} is at version {document.version}: not compensated")
        if noted.get("new_original"):
            self._raw.delete_prefix(raw_version_prefix(document_id, noted["version"]))
        self._parsed.delete_prefix(parsed_prefix(document_id, noted["version"]))
        released = self._documents.release(
            document_id, record.operation.operation_id, version=noted["previous"]
        )
        return {"released": released}

    def fail(self, state: dict[str, Any]) -> None:
        """The operation failed with the error the Catch caught; after a compensation the document
        (unchanged at its version) is reported with DocumentFailed."""
        record = self._record(state)
        # Failed, the document stays at the version it had (unknown if the update failed before noting it).
        code, message = self._fail(record, state, version=(record.document or {}).get("previous"))
        if (state.get("compensated") or {}).get("released"):
            noted = record.document
            reason = f"{code}: {message}; the document stays at version {noted['previous']}"
            self._report_compensated(record, noted["version"], "update", reason)
