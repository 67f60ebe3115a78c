"""What the delete and update sagas share (docs/saga.md): operation ids, who may act on a document,
an operation record's progress and end, starting an execution and reading an operation back, and the
ground every saga step stands on."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ragline.contracts import (
    Document,
    DocumentFailed,
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
from ragline.saga import failure_message

from .errors import OperationNotFound, OperationNotStarted
from .ports import (
    BlobStore,
    DocumentRepository,
    EventPublisher,
    ExecutionStarter,
    OperationRecord,
    OperationRepository,
    event_metadata,
)


def operation_id_for(
    kind: OperationKind, principal: Principal, idempotency_key: str, document_id: str
) -> str:
    """The same request (kind, caller, key, document) names the same operation, and so the same
    execution. A delete's seed has no kind (it came first), so the ids of its operations stay as they
    were; an update never names the id a DELETE with the same key would."""
    prefix = [kind.value] if kind != OperationKind.DELETE else []
    seed = "\n".join([*prefix, principal.tenant or "", principal.user_id, idempotency_key, document_id])
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def visible(document: Document, principal: Principal) -> bool:
    if document.owner == principal.user_id and document.tenant == principal.tenant:
        return True
    return can_see(principal, document.allowed_groups, document.tenant)


def running_holder(operations: OperationRepository, document: Document) -> OperationRecord | None:
    """The operation holding the document, if it has not finished (a finished one stays recorded as
    the holder until the next operation takes the document over)."""
    if document.operation_id is None:
        return None
    held = operations.get(document.operation_id)
    return held if held is not None and not held.operation.status.finished else None


def progress(
    record: OperationRecord,
    now: datetime,
    *,
    done: str | None = None,
    done_at: datetime | None = None,
    current: str | None,
) -> OperationRecord:
    """The operation running, with `done` added to its steps (once) and `current` next."""
    operation = record.operation
    steps = list(operation.steps)
    if done is not None and all(step.name != done for step in steps):
        steps.append(OperationStep(name=done, completed_at=done_at or now))
    record.operation = operation.model_copy(
        update={"status": OperationStatus.RUNNING, "steps": steps, "current_step": current, "updated_at": now}
    )
    return record


def finished(
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


class OperationRequests:
    """The API's side of a saga: start an operation's execution, show an operation to its requester."""

    kind: OperationKind

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

    def get(self, operation_id: str, principal: Principal) -> Operation:
        record = self._operations.get(operation_id)
        if record is None or (record.tenant, record.requester) != (principal.tenant, principal.user_id):
            raise OperationNotFound(operation_id)
        return record.operation

    def _require_executions(self) -> None:
        if self._executions is None:
            raise OperationNotStarted(f"no state machine is configured for {self.kind.value}s")

    def _own_id(
        self, principal: Principal, idempotency_key: str | None, document_id: str
    ) -> tuple[str, OperationRecord | None]:
        """The operation's id, and the operation a retried request (same key) already recorded."""
        if idempotency_key is None:
            return self._ids(), None
        own = operation_id_for(self.kind, principal, idempotency_key, document_id)
        return own, self._operations.get(own)

    def _open(
        self,
        operation_id: str,
        document_id: str,
        principal: Principal,
        correlation_id: str,
        *,
        first_step: str,
        version: int | None = None,
        noted: dict[str, Any] | None = None,
    ) -> Operation:
        """Record a new operation, pending, and start it (a request with the same key racing this
        one recorded it first: then theirs is ours)."""
        now = self._clock()
        record = OperationRecord(
            operation=Operation(
                operation_id=operation_id,
                kind=self.kind,
                document_id=document_id,
                status=OperationStatus.PENDING,
                current_step=first_step,
                version=version,
                created_at=now,
                updated_at=now,
            ),
            tenant=principal.tenant,
            requester=principal.user_id,
            expires_at=now + self._ttl,
            correlation_id=correlation_id,
            document=noted or {},
        )
        if not self._operations.create(record):
            record = self._operations.get(record.operation.operation_id) or record
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
            **self._payload(),
        }
        try:
            self._executions.start(record.operation.operation_id, payload)
        except Exception as exc:
            failed = finished(
                record, self._clock(), error=OperationError(code="operation_not_started", message=str(exc))
            )
            self._operations.save(failed)
            self._not_started(record)
            raise OperationNotStarted(
                f"the {self.kind.value} could not be started; send it again with a new key"
            ) from exc
        return record.operation

    def _payload(self) -> Mapping[str, Any]:
        """What the execution's input carries besides the operation's ids."""
        return {}

    def _not_started(self, record: OperationRecord) -> None:
        """Undo what the request did before the execution failed to start."""


class SagaSteps:
    """Ingest's steps of one state machine. Each takes the execution's state (`operation_id`,
    `document_id`, `correlation_id`, and what earlier steps returned) and is idempotent: a retried
    step (a Lambda response lost, a Retry) finds its own work done."""

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

    def _succeed(self, record: OperationRecord, *, done: str, version: int | None) -> None:
        now = self._clock()
        self._operations.save(finished(progress(record, now, done=done, current=None), now))
        self._publisher.publish(operation_completed(record, version=version))

    def _fail(
        self, record: OperationRecord, state: dict[str, Any], *, version: int | None
    ) -> tuple[str, str]:
        """The operation failed with the error the Catch caught, and said so; returns its code and
        message for the saga's own report of what became of the document."""
        code, message = failure_message(state.get("error"))
        now = self._clock()
        self._operations.save(finished(record, now, error=OperationError(code=code, message=message)))
        self._publisher.publish(operation_completed(record, version=version))
        return code, message

    def _report_compensated(self, record: OperationRecord, version: int, what: str, reason: str) -> None:
        """DocumentFailed (`<what>_failed`) for a document a compensation put back as it was."""
        document_id = record.operation.document_id
        self._publisher.publish(
            DocumentFailed(
                metadata=event_metadata(
                    record.correlation_id,
                    document_id,
                    version,
                    f"{what}-failed-{record.operation.operation_id}",
                    tenant=record.tenant,
                ),
                document_id=document_id,
                version=version,
                stage="ingest",
                code=f"{what}_failed",
                reason=reason,
            )
        )
