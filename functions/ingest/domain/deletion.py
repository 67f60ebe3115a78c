"""Deleting a document: the request (DELETE /v1/documents/{id}, GET /v1/operations/{id}) and ingest's
steps of the document-delete saga (docs/saga.md).

The request records an operation and starts the state machine, whose execution name is the
operation id. One operation holds a document at a time (`Document.operation_id`, claimed with a
conditional write): a DELETE while a delete is in flight returns that operation; an operation that
has finished (failed) is taken over by the next DELETE, which resumes a document left `deleting`.
With an Idempotency-Key the operation id is derived from (tenant, user, key, document), so a retried
request finds its operation and starts nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ragline.contracts import (
    Document,
    DocumentDeleted,
    DocumentFailed,
    DocumentStatus,
    EventMetadata,
    Operation,
    OperationCompleted,
    OperationError,
    OperationKind,
    OperationStatus,
    OperationStep,
    Principal,
    new_id,
    utcnow,
)
from ragline.identity import can_see
from ragline.saga import (
    COMPLETE,
    DELETE_OBJECTS,
    DELETE_RECORD,
    DELETE_STEPS,
    DELETE_VECTORS,
    MARK_DELETING,
    PUBLISH_DELETED,
    failure_message,
)

from .errors import DocumentBusy, DocumentNotFound, OperationNotFound, OperationNotStarted
from .ports import (
    BlobStore,
    DocumentRepository,
    EventPublisher,
    ExecutionStarter,
    OperationRecord,
    OperationRepository,
    PendingEvent,
    chunks_key,
    content_key,
    document_parsed_prefix,
    event_metadata,
    raw_prefix,
)

# Statuses a delete waits out (DocumentBusy): the pipeline is still writing the document's chunks or
# vectors, and a delete now would leave what it writes next behind.
IN_FLIGHT = frozenset(
    {DocumentStatus.RECEIVED, DocumentStatus.PARSING, DocumentStatus.CHUNKED, DocumentStatus.EMBEDDING}
)


def operation_id_for(principal: Principal, idempotency_key: str, document_id: str) -> str:
    """The same request (caller, key, document) names the same operation, and so the same execution."""
    seed = "\n".join([principal.tenant or "", principal.user_id, idempotency_key, document_id])
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def visible(document: Document, principal: Principal) -> bool:
    if document.owner == principal.user_id and document.tenant == principal.tenant:
        return True
    return can_see(principal, document.allowed_groups, document.tenant)


class DeletionRequests:
    """The API's side: start a delete, show an operation."""

    def __init__(
        self,
        documents: DocumentRepository,
        operations: OperationRepository,
        executions: ExecutionStarter | None,
        *,
        ttl: timedelta,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
    ) -> None:
        self._documents = documents
        self._operations = operations
        self._executions = executions
        self._ttl = ttl
        self._clock = clock
        self._ids = ids

    def delete(
        self,
        document_id: str,
        principal: Principal,
        correlation_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> Operation:
        if self._executions is None:
            raise OperationNotStarted("no state machine is configured for deletes")
        if idempotency_key is not None:
            own = operation_id_for(principal, idempotency_key, document_id)
            if (existing := self._operations.get(own)) is not None:
                return self._started(existing)
        else:
            own = self._ids()
        document = self._documents.get(document_id)
        if document is None or not visible(document, principal):
            raise DocumentNotFound(document_id)
        for _ in range(3):  # each failed claim means another request changed the holder meanwhile
            holder = document.operation_id
            held = self._operations.get(holder) if holder is not None else None
            if held is not None and not held.operation.status.finished:
                if held.operation.kind == OperationKind.DELETE:
                    return self._started(held)  # a delete in flight: that one
                break  # an update in flight: this delete waits its turn (MarkDeleting claims it)
            if self._documents.claim_operation(document_id, own, holder=holder):
                break
            document = self._documents.get(document_id)
            if document is None:
                raise DocumentNotFound(document_id)
        else:
            raise DocumentBusy(f"document {document_id} changed hands while the delete was requested")
        now = self._clock()
        record = OperationRecord(
            operation=Operation(
                operation_id=own,
                kind=OperationKind.DELETE,
                document_id=document_id,
                status=OperationStatus.PENDING,
                current_step=MARK_DELETING,
                created_at=now,
                updated_at=now,
            ),
            tenant=principal.tenant,
            requester=principal.user_id,
            expires_at=now + self._ttl,
            correlation_id=correlation_id,
        )
        if not self._operations.create(record):  # the same key raced us here: theirs is ours
            record = self._operations.get(own) or record
        return self._started(record)

    def _started(self, record: OperationRecord) -> Operation:
        """Start the execution of a pending operation (again: a request that recorded it may have
        died before starting it; starting an existing execution starts nothing new)."""
        if record.operation.status != OperationStatus.PENDING or self._executions is None:
            return record.operation
        payload = {
            "operation_id": record.operation.operation_id,
            "document_id": record.operation.document_id,
            "correlation_id": record.correlation_id,
        }
        try:
            self._executions.start(record.operation.operation_id, payload)
        except Exception as exc:
            failed = _finished(
                record, self._clock(), error=OperationError(code="operation_not_started", message=str(exc))
            )
            self._operations.save(failed)
            raise OperationNotStarted(
                "the delete could not be started; send it again with a new key"
            ) from exc
        return record.operation

    def get(self, operation_id: str, principal: Principal) -> Operation:
        record = self._operations.get(operation_id)
        if record is None or (record.tenant, record.requester) != (principal.tenant, principal.user_id):
            raise OperationNotFound(operation_id)
        return record.operation


def _progress(
    record: OperationRecord,
    now: datetime,
    *,
    done: str | None = None,
    done_at: datetime | None = None,
    current: str | None,
) -> OperationRecord:
    operation = record.operation
    steps = list(operation.steps)
    if done is not None and all(step.name != done for step in steps):
        steps.append(OperationStep(name=done, completed_at=done_at or now))
    record.operation = operation.model_copy(
        update={
            "status": OperationStatus.RUNNING,
            "steps": steps,
            "current_step": current,
            "updated_at": now,
        }
    )
    return record


def _finished(
    record: OperationRecord, now: datetime, *, error: OperationError | None = None
) -> OperationRecord:
    record.operation = record.operation.model_copy(
        update={
            "status": OperationStatus.FAILED if error else OperationStatus.SUCCEEDED,
            "error": error,
            "current_step": None,
            "updated_at": now,
        }
    )
    return record


def operation_completed(record: OperationRecord, *, version: int | None) -> OperationCompleted:
    """What a saga's last step (Complete or FailOperation) publishes: the operation as it ended."""
    operation = record.operation
    return OperationCompleted(
        metadata=EventMetadata(
            correlation_id=record.correlation_id,
            idempotency_key=f"operation:{operation.operation_id}:completed",
            tenant=record.tenant,
        ),
        operation_id=operation.operation_id,
        kind=operation.kind,
        document_id=operation.document_id,
        status=operation.status.value,
        version=version,
        collection=(record.document or {}).get("collection"),
        error=operation.error,
    )


def _next(step: str) -> str | None:
    position = DELETE_STEPS.index(step)
    return DELETE_STEPS[position + 1] if position + 1 < len(DELETE_STEPS) else None


class DeleteSaga:
    """Ingest's steps of the document-delete state machine. Each takes the execution's state
    (`operation_id`, `document_id`, `correlation_id`, and what earlier steps returned) and is
    idempotent: a retried step (a Lambda response lost, a Retry) finds its own work done."""

    def __init__(
        self,
        documents: DocumentRepository,
        operations: OperationRepository,
        raw: BlobStore,
        parsed: BlobStore,
        publisher: EventPublisher,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._documents = documents
        self._operations = operations
        self._raw = raw
        self._parsed = parsed
        self._publisher = publisher
        self._clock = clock

    def _record(self, state: dict[str, Any]) -> OperationRecord:
        record = self._operations.get(state["operation_id"])
        if record is None:
            raise OperationNotFound(state["operation_id"])
        return record

    # ------------------------------------------------------------------ forward

    def mark_deleting(self, state: dict[str, Any]) -> dict[str, Any]:
        """The document → deleting, held by this operation; returns what later steps and the
        compensation need to know about it (kept on the operation too, for a retry of this step)."""
        record = self._record(state)
        operation_id, document_id = record.operation.operation_id, record.operation.document_id
        document = self._documents.get(document_id)
        if document is None:
            raise DocumentNotFound(document_id)
        if document.operation_id != operation_id:
            # An update held it when this delete was requested: take it over once that has finished.
            holder = document.operation_id
            held = self._operations.get(holder) if holder is not None else None
            if (
                held is not None and not held.operation.status.finished
            ) or not self._documents.claim_operation(document_id, operation_id, holder=holder):
                raise DocumentBusy(f"document {document_id} is held by operation {holder}")
            document = self._documents.get(document_id)
            if document is None:
                raise DocumentNotFound(document_id)
        if document.status == DocumentStatus.DELETING:
            if record.document:  # this step ran before (its response was lost) or a resumed delete
                return record.document
            noted = _noted(document, DocumentStatus.DELETING)
        else:
            if document.status in IN_FLIGHT:
                raise DocumentBusy(f"document {document_id} is still being ingested ({document.status})")
            noted = _noted(document, document.status)
        record.document = noted
        self._operations.save(_progress(record, self._clock(), current=MARK_DELETING))
        if document.status != DocumentStatus.DELETING and not self._documents.mark_deleting(
            document_id, operation_id, expected=document.status, updated_at=self._clock()
        ):
            raise DocumentBusy(f"document {document_id} changed while it was being marked")
        self._operations.save(_progress(record, self._clock(), done=MARK_DELETING, current=DELETE_VECTORS))
        return noted

    def delete_objects(self, state: dict[str, Any]) -> None:
        record = self._record(state)
        vectors_at = (state.get("vectors") or {}).get("completed_at")
        done_at = datetime.fromisoformat(vectors_at) if vectors_at else None
        self._operations.save(
            _progress(record, self._clock(), done=DELETE_VECTORS, done_at=done_at, current=DELETE_OBJECTS)
        )
        document_id = record.operation.document_id
        self._raw.delete_prefix(raw_prefix(document_id))
        self._parsed.delete_prefix(document_parsed_prefix(document_id))
        self._operations.save(_progress(record, self._clock(), done=DELETE_OBJECTS, current=DELETE_RECORD))

    def delete_record(self, state: dict[str, Any]) -> None:
        record = self._record(state)
        document_id = record.operation.document_id
        document = self._documents.get(document_id)
        if document is not None:
            claim = (
                content_key(
                    document.tenant, document.collection, document.content_hash, document.allowed_groups
                )
                if document.content_hash
                else None
            )
            event = _deleted(record, state.get("document") or record.document)
            announce = PendingEvent(
                key=event.metadata.idempotency_key,
                detail_type=event.DETAIL_TYPE,
                detail=event.model_dump_json(),
                written_at=self._clock(),
            )
            self._documents.delete(
                document_id, record.operation.operation_id, content_key=claim, announce=announce
            )
            if self._documents.get(document_id) is not None:
                raise DocumentBusy(f"document {document_id} is held by another operation")
        self._operations.save(_progress(record, self._clock(), done=DELETE_RECORD, current=PUBLISH_DELETED))

    def publish_deleted(self, state: dict[str, Any]) -> None:
        """Publish the event DeleteRecord left in the outbox, then settle it. If this step never
        succeeds, the reconciler publishes it (docs/saga.md, "Reconciliation")."""
        record = self._record(state)
        event = _deleted(record, state.get("document") or record.document)
        self._publisher.publish(event)
        self._documents.settle(event.metadata.idempotency_key)
        self._operations.save(_progress(record, self._clock(), done=PUBLISH_DELETED, current=COMPLETE))

    def complete(self, state: dict[str, Any]) -> None:
        record = self._record(state)
        now = self._clock()
        self._operations.save(_finished(_progress(record, now, done=COMPLETE, current=None), now))
        self._publisher.publish(operation_completed(record, version=(record.document or {}).get("version")))

    # ------------------------------------------------------------------ compensation and failure

    def unmark_deleting(self, state: dict[str, Any]) -> dict[str, Any]:
        """Compensation before the pivot: the document back to the status it had, released (a no-op
        when MarkDeleting failed before marking it)."""
        record = self._record(state)
        noted = state.get("document") or record.document
        document_id = record.operation.document_id
        previous = DocumentStatus(noted["status"]) if noted else None
        restored = (
            previous is not None
            and previous != DocumentStatus.DELETING
            and self._documents.restore_status(
                document_id, record.operation.operation_id, status=previous, updated_at=self._clock()
            )
        )
        if not restored and previous is not None and previous != DocumentStatus.DELETING:
            # a retry of this step: restored the first time if the document is back, released
            current = self._documents.get(document_id)
            restored = current is not None and current.status == previous and current.operation_id is None
        return {"restored": restored, "status": previous.value if restored and previous else None}

    def fail(self, state: dict[str, Any]) -> None:
        """The operation failed with the error the Catch caught; after a compensation, the document
        (intact again) is reported with DocumentFailed."""
        record = self._record(state)
        code, message = failure_message(state.get("error"))
        now = self._clock()
        self._operations.save(_finished(record, now, error=OperationError(code=code, message=message)))
        noted = state.get("document") or record.document
        self._publisher.publish(operation_completed(record, version=(noted or {}).get("version")))
        if (state.get("compensated") or {}).get("restored") and noted:
            document_id = record.operation.document_id
            self._publisher.publish(
                DocumentFailed(
                    metadata=event_metadata(
                        record.correlation_id,
                        document_id,
                        noted["version"],
                        f"delete-failed-{record.operation.operation_id}",
                        tenant=record.tenant,
                    ),
                    document_id=document_id,
                    version=noted["version"],
                    stage="ingest",
                    code="delete_failed",
                    reason=f"{code}: {message}; the document was restored",
                )
            )


def _deleted(record: OperationRecord, noted: dict[str, Any]) -> DocumentDeleted:
    document_id = record.operation.document_id
    return DocumentDeleted(
        metadata=event_metadata(
            record.correlation_id, document_id, noted["version"], "deleted", tenant=record.tenant
        ),
        document_id=document_id,
        version=noted["version"],
        collection=noted["collection"],
    )


def _noted(document: Document, status: DocumentStatus) -> dict[str, Any]:
    """What the saga keeps about the document it deletes (JSON: it travels in the execution state)."""
    return {
        "version": document.version,
        "collection": document.collection,
        "status": status.value,
        "indexed": status == DocumentStatus.INDEXED,
        "chunks_key": chunks_key(document.id, document.version),
        "chunk_count": document.chunk_count or 0,
    }
