"""The document-delete saga under injected faults: the definition the CDK app synthesizes (exported to
docs/statemachines/, checked against the app by tests/infra/test_saga_stack.py) runs in moto's
executor in-process, its Lambda tasks run by the real `ingest-saga` and `index-saga` handlers over
moto-backed adapters and a real LanceDB index.

A fault is a test-only wrapper around a real handler that raises at one step (before the step runs,
or after it did its work and before it answers: a lost response); nothing under test is stubbed.
After every run the invariants hold: no orphaned vectors (every chunk in the index belongs to a
document in the table that is indexed at that version), no phantom (every indexed document has its
vectors), the operation ended succeeded or failed, and the document is either gone with nothing left
(record, claim, objects of every version), intact and searchable at exactly its version, or
`deleting` with no vectors (a failure after the pivot), which a new DELETE finishes.

moto sleeps for real between retries, so the faults are permanent (no Retry matches them before
the pivot); after the pivot every error is retried once (1 s); one case is transient."""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pytest

from functions.index.domain.service import ChunkFile, IndexService
from functions.index.handlers import saga as index_saga
from functions.ingest import wiring
from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.adapters.executions import StepFunctionsStarter
from functions.ingest.adapters.operations_table import DynamoOperationRepository
from functions.ingest.domain.deletion import DeletionRequests
from functions.ingest.domain.ports import chunks_key, content_key, raw_key, text_key
from functions.ingest.handlers import saga as ingest_saga
from ragline import aws
from ragline.contracts import (
    Chunk,
    ContentType,
    Document,
    DocumentDeleted,
    DocumentFailed,
    DocumentStatus,
    OperationStatus,
    Principal,
    utcnow,
)
from ragline.events import EventBridgePublisher
from ragline.local.lambda_runtime import LocalFunction
from ragline.local.provision import STATE_MACHINE_DIR, STATES_ROLE
from ragline.local.stepfunctions import (
    HandlerInvoker,
    executing_state_machines,
    lambda_tasks_routed,
    wait_for_execution,
)
from ragline.saga import (
    COMPLETE,
    DELETE_OBJECTS,
    DELETE_RECORD,
    DELETE_STEPS,
    DELETE_VECTORS,
    MARK_DELETING,
    PUBLISH_DELETED,
    TransientError,
)
from ragline.search.lance import LanceIndex
from ragline.search.port import SearchFilter
from ragline.topology import DELETE_STATE_MACHINE, TOPOLOGY, physical_name
from tests.integration.conftest import OBSERVER_QUEUE, AwsPlatform

DIM = 16
ALICE = Principal(user_id="alice", groups=frozenset({"eng"}))
ENG = SearchFilter(groups_any=frozenset({"eng"}))
TEXTS = ["turbine blade inspection every ninety days", "rotor bearing replacement budget", "sensor valve"]
AFTER_PIVOT = (DELETE_OBJECTS, DELETE_RECORD, PUBLISH_DELETED, COMPLETE)


class HashedEmbedder:
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = []
        for text in texts:
            v = [0.0] * DIM
            for word in text.lower().split():
                v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append([x / norm for x in v])
        return vectors


class InjectedFault(Exception):
    """A step's failure that no Retry names (permanent)."""


@dataclass
class Fault:
    step: str | None = None
    after: bool = False  # raise once the step has done its work (its response is lost)
    times: int | None = None  # None: every attempt
    error: type[Exception] = InjectedFault
    raised: int = 0
    gate: threading.Event | None = None  # instead of raising: wait for it, then run the step
    also: frozenset[str] = frozenset()  # steps that fail too, every time, before they run (compensations)

    def wrap(self, handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
        def faulty(event: dict[str, Any], context: Any) -> Any:
            if event.get("step") in self.also:
                raise self.error(f"injected before {event['step']}")
            hit = event.get("step") == self.step and (self.times is None or self.raised < self.times)
            if hit and self.gate is not None:
                self.gate.wait(10)
                return handler(event, context)
            if hit and not self.after:
                self.raised += 1
                raise self.error(f"injected before {self.step}")
            result = handler(event, context)
            if hit:
                self.raised += 1
                raise self.error(f"injected after {self.step}")
            return result

        return faulty


@dataclass
class Saga:
    platform: AwsPlatform
    index: LanceIndex
    service: IndexService
    documents: DynamoDocumentRepository
    operations: DynamoOperationRepository
    requests: DeletionRequests
    sfn: Any
    fault: Fault

    def seed(self, document_id: str, *, groups: Sequence[str] = ("eng",)) -> Document:
        """An indexed document as the pipeline leaves it: original, parsed text and chunk file in
        the buckets, the record with its content claim, its chunks active in the index."""
        s3, settings = self.platform.s3, self.platform.settings
        data = f"{document_id}: " + " ".join(TEXTS)
        digest = hashlib.sha256(data.encode()).hexdigest()
        chunks = [
            Chunk(
                document_id=document_id,
                version=1,
                ordinal=n,
                collection="default",
                title=f"Manual {document_id}",
                text=text,
                token_count=len(text.split()),
                char_start=0,
                char_end=len(text),
                allowed_groups=list(groups),
            )
            for n, text in enumerate(TEXTS)
        ]
        s3.put_object(Bucket=settings.raw_bucket, Key=raw_key(document_id, 1), Body=data.encode())
        s3.put_object(Bucket=settings.parsed_bucket, Key=text_key(document_id, 1), Body=data.encode())
        s3.put_object(
            Bucket=settings.parsed_bucket,
            Key=chunks_key(document_id, 1),
            Body="\n".join(c.model_dump_json() for c in chunks).encode(),
        )
        now = utcnow()
        document = Document(
            id=document_id,
            version=1,
            title=f"Manual {document_id}",
            content_type=ContentType.TEXT,
            content_hash=digest,
            size_bytes=len(data),
            allowed_groups=list(groups),
            owner="alice",
            status=DocumentStatus.INDEXED,
            chunk_count=len(chunks),
            indexed_count=len(chunks),
            stage_times={"indexed": now},
            correlation_id=f"seed-{document_id}",
            created_at=now,
            updated_at=now,
        )
        self.documents.create(document, content_key=self.claim_key(document))
        source = ChunkFile(document_id, 1, chunks_key(document_id, 1), len(chunks))
        self.service.index_version(source)
        self.service.activate(document_id, 1)
        return document

    @staticmethod
    def claim_key(document: Document) -> str:
        assert document.content_hash is not None
        return content_key(
            document.tenant, document.collection, document.content_hash, document.allowed_groups
        )

    def delete(self, document_id: str, *, key: str | None = None) -> tuple[str, dict[str, Any]]:
        operation = self.requests.delete(document_id, ALICE, f"cid-{document_id}", idempotency_key=key)
        arn = self.execution_arn(operation.operation_id)
        return operation.operation_id, wait_for_execution(self.sfn, arn, timeout_s=60)

    def execution_arn(self, name: str, machine_key: str = "RAGLINE_DELETE_STATE_MACHINE_ARN") -> str:
        machine = self.platform.environment[machine_key]
        return machine.replace(":stateMachine:", ":execution:") + f":{name}"

    def objects(self, document_id: str) -> list[str]:
        """Every version and delete marker of the document's objects, in both buckets."""
        found = []
        for bucket, prefix in (
            (self.platform.settings.raw_bucket, f"raw/{document_id}/"),
            (self.platform.settings.parsed_bucket, f"parsed/{document_id}/"),
        ):
            listed = self.platform.s3.list_object_versions(Bucket=bucket, Prefix=prefix)
            found += [v["Key"] for v in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]]
        return found

    def published(self) -> list[dict[str, Any]]:
        return [json.loads(m["Body"]) for m in self.platform.receive(OBSERVER_QUEUE, attempts=2)]

    def assert_invariants(self, *document_ids: str) -> None:
        for document_id in document_ids:
            document = self.documents.get(document_id)
            in_index = self.index.count(document_id)
            if document is None:
                assert in_index == 0, f"orphaned vectors of deleted {document_id}"
                assert self.objects(document_id) == [], f"objects of deleted {document_id} left"
                continue
            if document.status == DocumentStatus.INDEXED:
                active = self.index.count(document_id, document.version, active=True)
                assert active == document.chunk_count == in_index, f"{document_id}: {active}/{in_index}"
                hits = self.index.keyword_search("turbine blade", ENG, 10)
                assert {h.chunk.version for h in hits if h.chunk.document_id == document_id} == {
                    document.version
                }
            else:
                assert document.status == DocumentStatus.DELETING, document.status
                assert in_index == 0, f"{document_id} is deleting but has vectors (phantom hits)"


@pytest.fixture
def saga(aws_platform: AwsPlatform, tmp_path: Path) -> Iterator[Saga]:
    settings = aws_platform.settings.model_copy(
        update={
            "operations_table": physical_name("operations"),
            "delete_state_machine_arn": aws_platform.environment["RAGLINE_DELETE_STATE_MACHINE_ARN"],
        }
    )
    aws_platform.settings = settings
    db = lancedb.connect(tmp_path / "index", read_consistency_interval=timedelta(0))
    index = LanceIndex(db, "chunks", dimension=DIM)
    index.ensure_index()
    publisher = EventBridgePublisher(aws_platform.events, settings.event_bus)
    service = IndexService(
        _chunk_source(aws_platform), HashedEmbedder(), index, publisher, dimension=DIM, batch_size=8
    )
    sfn = aws.client("stepfunctions", settings)
    fault = Fault()
    ingest_handler = ingest_saga.make_handler(
        lambda: wiring.build_delete_saga(
            settings, s3=aws_platform.s3, dynamodb=aws_platform.dynamodb, events=aws_platform.events
        )
    )
    index_handler = index_saga.make_handler(lambda: service)
    functions = {
        "ingest-saga": LocalFunction(TOPOLOGY.function("ingest-saga"), handler=fault.wrap(ingest_handler)),
        "index-saga": LocalFunction(TOPOLOGY.function("index-saga"), handler=fault.wrap(index_handler)),
    }
    invoker = HandlerInvoker({f.name: f.invoke for f in functions.values()})
    with executing_state_machines(), lambda_tasks_routed(invoker):
        # moto keeps executing state machines in another backend: create it there, as `ragline dev`
        # does (its moto server executes from the start), from the exported definition.
        created = sfn.create_state_machine(
            name=physical_name(DELETE_STATE_MACHINE),
            definition=export_path(DELETE_STATE_MACHINE).read_text(),
            roleArn=STATES_ROLE,
        )
        assert created["stateMachineArn"] == settings.delete_state_machine_arn
        yield Saga(
            platform=aws_platform,
            index=index,
            service=service,
            documents=DynamoDocumentRepository(aws_platform.dynamodb, settings.documents_table),
            operations=DynamoOperationRepository(aws_platform.dynamodb, settings.operations_table),
            requests=DeletionRequests(
                DynamoDocumentRepository(aws_platform.dynamodb, settings.documents_table),
                DynamoOperationRepository(aws_platform.dynamodb, settings.operations_table),
                StepFunctionsStarter(sfn, settings.delete_state_machine_arn),
                ttl=timedelta(days=30),
            ),
            sfn=sfn,
            fault=fault,
        )


def export_path(name: str) -> Path:
    return STATE_MACHINE_DIR / f"{name}.asl.json"


def _chunk_source(platform: AwsPlatform) -> Any:
    from functions.index.adapters.chunk_store import S3ChunkSource

    return S3ChunkSource(platform.s3, platform.settings.parsed_bucket)


# --------------------------------------------------------------------------------------------


def test_a_delete_removes_everything_and_says_so(saga: Saga) -> None:
    document = saga.seed("doc-a")
    saga.seed("doc-b")
    operation_id, execution = saga.delete("doc-a")
    assert execution["status"] == "SUCCEEDED"
    record = saga.operations.get(operation_id)
    assert record is not None
    assert record.operation.status == OperationStatus.SUCCEEDED
    assert [s.name for s in record.operation.steps] == list(DELETE_STEPS)
    assert record.operation.current_step is None
    assert saga.documents.get("doc-a") is None
    assert saga.documents.find_by_content(saga.claim_key(document)) is None
    saga.assert_invariants("doc-a", "doc-b")
    deleted = [e for e in saga.published() if e["detail-type"] == DocumentDeleted.DETAIL_TYPE]
    assert [(e["source"], e["detail"]["document_id"], e["detail"]["version"]) for e in deleted] == [
        (DocumentDeleted.SOURCE, "doc-a", 1)
    ]
    # The topology's rule delivers it to the context's answer-cache invalidation queue.
    invalidations = saga.platform.events_on("answer-cache", DocumentDeleted)
    assert [(e.detail.document_id, e.detail.collection) for e in invalidations] == [("doc-a", "default")]


FAULTS = [
    *[pytest.param(step, False, id=f"{step}-before") for step in DELETE_STEPS],
    pytest.param(MARK_DELETING, True, id=f"{MARK_DELETING}-after"),
    pytest.param(DELETE_VECTORS, True, id=f"{DELETE_VECTORS}-after"),
]


@pytest.mark.parametrize(("step", "after"), FAULTS)
def test_a_fault_at_any_step_leaves_the_invariants(saga: Saga, step: str, after: bool) -> None:
    saga.fault.step, saga.fault.after = step, after
    saga.seed("doc-a")
    saga.seed("doc-b")
    operation_id, execution = saga.delete("doc-a")
    record = saga.operations.get(operation_id)
    assert record is not None
    saga.assert_invariants("doc-a", "doc-b")
    assert execution["status"] == "FAILED"
    assert record.operation.status == OperationStatus.FAILED
    assert record.operation.error is not None
    assert record.operation.error.code == "InjectedFault"
    document = saga.documents.get("doc-a")
    failed_events = [e for e in saga.published() if e["detail-type"] == DocumentFailed.DETAIL_TYPE]
    if step in (MARK_DELETING, DELETE_VECTORS):  # before the pivot: the document is intact again
        assert document is not None and document.status == DocumentStatus.INDEXED
        assert document.operation_id is None or step == MARK_DELETING
        # DocumentFailed says the document was restored: not when nothing had been marked yet.
        assert len(failed_events) == (0 if (step, after) == (MARK_DELETING, False) else 1)
    elif step in (PUBLISH_DELETED, COMPLETE):  # the record is gone already: nothing to resume
        assert document is None
    else:  # after the pivot: deleting, no vectors, and a new DELETE finishes it
        assert document is not None and document.status == DocumentStatus.DELETING
        saga.fault.step = None
        resumed_id, resumed = saga.delete("doc-a")
        assert resumed_id != operation_id
        assert resumed["status"] == "SUCCEEDED"
        assert saga.documents.get("doc-a") is None
        saga.assert_invariants("doc-a", "doc-b")


def test_a_transient_error_is_retried_and_the_delete_succeeds(saga: Saga) -> None:
    saga.fault.step, saga.fault.times, saga.fault.error = DELETE_VECTORS, 1, TransientError
    saga.seed("doc-a")
    operation_id, execution = saga.delete("doc-a")
    assert execution["status"] == "SUCCEEDED"
    assert saga.fault.raised == 1
    saga.assert_invariants("doc-a")
    assert saga.documents.get("doc-a") is None


def test_the_same_idempotency_key_starts_one_execution(saga: Saga) -> None:
    saga.seed("doc-a")
    first, done = saga.delete("doc-a", key="delete-doc-a-1")
    assert done["status"] == "SUCCEEDED"
    again = saga.requests.delete("doc-a", ALICE, "cid-again", idempotency_key="delete-doc-a-1")
    assert again.operation_id == first
    assert again.status == OperationStatus.SUCCEEDED
    machine = saga.platform.environment["RAGLINE_DELETE_STATE_MACHINE_ARN"]
    assert len(saga.sfn.list_executions(stateMachineArn=machine)["executions"]) == 1


def test_a_delete_in_flight_is_returned_not_started_again(saga: Saga) -> None:
    saga.seed("doc-a")
    saga.fault.step, saga.fault.gate = MARK_DELETING, threading.Event()
    first = saga.requests.delete("doc-a", ALICE, "cid-1")
    second = saga.requests.delete("doc-a", ALICE, "cid-2")
    saga.fault.gate.set()
    assert second.operation_id == first.operation_id
    done = wait_for_execution(saga.sfn, saga.execution_arn(first.operation_id), timeout_s=60)
    assert done["status"] == "SUCCEEDED"
    machine = saga.platform.environment["RAGLINE_DELETE_STATE_MACHINE_ARN"]
    assert len(saga.sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    saga.assert_invariants("doc-a")


def test_operations_are_visible_to_their_requester_only(saga: Saga) -> None:
    from functions.ingest.domain.errors import DocumentNotFound, OperationNotFound

    saga.seed("doc-a")
    operation_id, _ = saga.delete("doc-a")
    assert saga.requests.get(operation_id, ALICE).status == OperationStatus.SUCCEEDED
    bob = Principal(user_id="bob", groups=frozenset({"eng"}))
    with pytest.raises(OperationNotFound):
        saga.requests.get(operation_id, bob)
    saga.seed("doc-c", groups=("finance",))
    with pytest.raises(DocumentNotFound):
        saga.requests.delete("doc-c", Principal(user_id="carol", groups=frozenset({"eng"})), "cid")


def test_the_execution_is_the_definition_exported_for_the_platform(saga: Saga) -> None:
    machine = saga.platform.environment["RAGLINE_DELETE_STATE_MACHINE_ARN"]
    described = saga.sfn.describe_state_machine(stateMachineArn=machine)
    assert described["name"] == physical_name(DELETE_STATE_MACHINE)
    assert json.loads(described["definition"])["StartAt"] == MARK_DELETING


def test_a_delete_waits_for_a_document_still_being_ingested(saga: Saga) -> None:
    """MarkDeleting raises DocumentBusy (which the state machine retries with backoff) while the
    pipeline may still write the document's chunks or vectors; it leaves the document alone."""
    from functions.ingest.domain.errors import DocumentBusy
    from functions.ingest.domain.ports import OperationRecord
    from ragline.contracts import Operation, OperationKind

    saga.seed("doc-a")
    assert saga.documents.update_status(
        "doc-a",
        version=1,
        expected={DocumentStatus.INDEXED},
        status=DocumentStatus.EMBEDDING,
        updated_at=utcnow(),
    )
    now = utcnow()
    operation = Operation(
        operation_id="op-busy",
        kind=OperationKind.DELETE,
        document_id="doc-a",
        status=OperationStatus.PENDING,
        created_at=now,
        updated_at=now,
    )
    saga.operations.create(
        OperationRecord(operation, None, "alice", now + timedelta(days=1), correlation_id="cid")
    )
    assert saga.documents.claim_operation("doc-a", "op-busy", holder=None)
    steps = wiring.build_delete_saga(
        saga.platform.settings,
        s3=saga.platform.s3,
        dynamodb=saga.platform.dynamodb,
        events=saga.platform.events,
    )
    with pytest.raises(DocumentBusy):
        steps.mark_deleting({"operation_id": "op-busy", "document_id": "doc-a"})
    document = saga.documents.get("doc-a")
    assert document is not None and document.status == DocumentStatus.EMBEDDING


def test_identical_content_uploaded_during_a_delete_is_a_new_document_whose_claim_survives(
    saga: Saga,
) -> None:
    from ragline.contracts import CreateDocumentRequest

    doomed = saga.seed("doc-a")
    saga.fault.step = DELETE_OBJECTS  # stop after the pivot: doc-a stays `deleting`
    saga.delete("doc-a")
    assert saga.documents.get("doc-a").status == DocumentStatus.DELETING  # type: ignore[union-attr]

    documents = wiring.build_document_service(
        saga.platform.settings,
        s3=saga.platform.s3,
        dynamodb=saga.platform.dynamodb,
        events=saga.platform.events,
    )
    data = saga.platform.s3.get_object(Bucket=saga.platform.settings.raw_bucket, Key=raw_key("doc-a", 1))
    request = CreateDocumentRequest(
        title="Manual again", text=data["Body"].read().decode(), allowed_groups=list(doomed.allowed_groups)
    )
    accepted = documents.create(request, ALICE, "cid-reupload")
    assert not accepted.deduplicated and accepted.document.id != "doc-a"
    claim = saga.documents.find_by_content(saga.claim_key(doomed))
    assert claim is not None and claim.document_id == accepted.document.id

    saga.fault.step = None
    _, resumed = saga.delete("doc-a")
    assert resumed["status"] == "SUCCEEDED"
    claim = saga.documents.find_by_content(saga.claim_key(doomed))
    assert claim is not None and claim.document_id == accepted.document.id
