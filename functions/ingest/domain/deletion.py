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

from datetime import datetime
from typing import Any

from ragline.contracts import (
    Document,
    DocumentDeleted,
    DocumentStatus,
    Operation,
    OperationKind,
    Principal,
)
from ragline.saga import (
    COMPLETE,
    DELETE_OBJECTS,
    DELETE_RECORD,
    DELETE_STEPS,
    DELETE_VECTORS,
    MARK_DELETING,
    PUBLISH_DELETED,
)

from .errors import DocumentBusy, DocumentNotFound
from .operations import OperationRequests, SagaSteps, progress, running_holder, visible
from .ports import (
    OperationRecord,
    PendingEvent,
    chunks_key,
    claim_key,
    document_parsed_prefix,
    event_metadata,
    raw_prefix,
)

# Statuses a delete waits out (DocumentBusy): the pipeline is still writing the document's chunks or
# vectors, and a delete now would leave what it writes next behind.
IN_FLIGHT = frozenset(
    {DocumentStatus.RECEIVED, DocumentStatus.PARSING, DocumentStatus.CHUNKED, DocumentStatus.EMBEDDING}
)


class DeletionRequests(OperationRequests):
    """The API's side: start a delete, show an operation."""

    kind = OperationKind.DELETE

    def delete(
        self,
        document_id: str,
        principal: Principal,
        correlation_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> Operation:
        self._require_executions()
        own, existing = self._own_id(principal, idempotency_key, document_id)
        if existing is not None:
            return self._started(existing)
        document = self._documents.get(document_id)
        if document is None or not visible(document, principal):
            raise DocumentNotFound(document_id)
        for _ in range(3):  # each failed claim means another request changed the holder meanwhile
            holder = document.operation_id
            held = running_holder(self._operations, document)
            if held is not None:
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
        return self._open(own, document_id, principal, correlation_id, first_step=MARK_DELETING)


def _next(step: str) -> str | None:
    position = DELETE_STEPS.index(step)
    return DELETE_STEPS[position + 1] if position + 1 < len(DELETE_STEPS) else None


class DeleteSaga(SagaSteps):
    """Ingest's steps of the document-delete state machine (see SagaSteps)."""

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
            if running_holder(self._operations, document) is not None or not self._documents.claim_operation(
                document_id, operation_id, holder=holder
            ):
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
        self._operations.save(progress(record, self._clock(), current=MARK_DELETING))
        if document.status != DocumentStatus.DELETING and not self._documents.mark_deleting(
            document_id, operation_id, expected=document.status, updated_at=self._clock()
        ):
            raise DocumentBusy(f"document {document_id} changed while it was being marked")
        self._operations.save(progress(record, self._clock(), done=MARK_DELETING, current=DELETE_VECTORS))
        return noted

    def delete_objects(self, state: dict[str, Any]) -> None:
        record = self._record(state)
        vectors_at = (state.get("vectors") or {}).get("completed_at")
        done_at = datetime.fromisoformat(vectors_at) if vectors_at else None
        self._operations.save(
            progress(record, self._clock(), done=DELETE_VECTORS, done_at=done_at, current=DELETE_OBJECTS)
        )
        document_id = record.operation.document_id
        self._raw.delete_prefix(raw_prefix(document_id))
        self._parsed.delete_prefix(document_parsed_prefix(document_id))
        self._operations.save(progress(record, self._clock(), done=DELETE_OBJECTS, current=DELETE_RECORD))

    def delete_record(self, state: dict[str, Any]) -> None:
        record = self._record(state)
        document_id = record.operation.document_id
        document = self._documents.get(document_id)
        if document is not None:
            claim = claim_key(
                document.tenant, document.collection, document.content_hash, document.allowed_groups
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
        self._operations.save(progress(record, self._clock(), done=DELETE_RECORD, current=PUBLISH_DELETED))

    def publish_deleted(self, state: dict[str, Any]) -> None:
        """Publish the event DeleteRecord left in the outbox, then settle it. If this step never
        succeeds, the reconciler publishes it (docs/saga.md, "Reconciliation")."""
        record = self._record(state)
        event = _deleted(record, state.get("document") or record.document)
        self._publisher.publish(event)
        self._documents.settle(event.metadata.idempotency_key)
        self._operations.save(progress(record, self._clock(), done=PUBLISH_DELETED, current=COMPLETE))

    def complete(self, state: dict[str, Any]) -> None:
        record = self._record(state)
        self._succeed(record, done=COMPLETE, version=(record.document or {}).get("version"))

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
        noted = state.get("document") or record.document
        code, message = self._fail(record, state, version=(noted or {}).get("version"))
        if (state.get("compensated") or {}).get("restored") and noted:
            self._report_compensated(
                record, noted["version"], "delete", f"{code}: {message}; the document was restored"
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
