"""The document-update saga under injected faults, as tests/integration/test_delete_saga.py runs the
delete: the exported definition in moto's executor in-process, its Lambda tasks run by the real
`ingest-saga` and `index-saga` handlers over moto-backed adapters and a real LanceDB index; a fault
is a test-only wrapper that raises at one step (before it, or after it did its work: a lost response).

After every run: the operation ended succeeded or failed; the document is `indexed`, released, with
nothing reserved, at exactly one version: the old one (unchanged groups and title, no object of the
new version left) after a failure before the pivot, the new one after it; its searchable chunks are
exactly that version's, with its groups; no vector of any other version is searchable (no orphan a
search could find), and every chunk of its version is there (no phantom). A final failure of
DeleteOldVectors leaves the old version's chunks in the index, inactive: the orphans docs/saga.md
names, for the reconciler."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pytest

from functions.index.domain.service import IndexService
from functions.index.handlers import saga as index_saga
from functions.ingest import wiring
from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.adapters.executions import StepFunctionsStarter
from functions.ingest.adapters.operations_table import DynamoOperationRepository
from functions.ingest.domain.deletion import DeletionRequests
from functions.ingest.domain.errors import DocumentBusy, DocumentNotFound
from functions.ingest.domain.updates import UpdateRequests
from functions.ingest.handlers import saga as ingest_saga
from ragline import aws
from ragline.contracts import (
    DocumentFailed,
    DocumentStatus,
    DocumentUpdated,
    OperationStatus,
    Principal,
    UpdateDocumentRequest,
)
from ragline.events import EventBridgePublisher
from ragline.local.lambda_runtime import LocalFunction
from ragline.local.provision import STATES_ROLE
from ragline.local.stepfunctions import (
    HandlerInvoker,
    executing_state_machines,
    lambda_tasks_routed,
    wait_for_execution,
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
    UPDATE_STEPS,
)
from ragline.search.lance import LanceIndex
from ragline.search.port import SearchFilter
from ragline.topology import DELETE_STATE_MACHINE, TOPOLOGY, UPDATE_STATE_MACHINE, physical_name
from tests.integration.conftest import AwsPlatform
from tests.integration.test_delete_saga import (
    ALICE,
    DIM,
    ENG,
    Fault,
    HashedEmbedder,
    Saga,
    _chunk_source,
    export_path,
)
from tests.integration.test_ingest_handlers import TOKENIZER

NEW_TEXT = "gearbox lubrication schedule quarterly with synthetic oil"
TO_GEARBOX = UpdateDocumentRequest(text=NEW_TEXT, allowed_groups=["ops"], title="Gearbox")
OPS = SearchFilter(groups_any=frozenset({"ops"}))
BEFORE_PIVOT = (RESERVE_VERSION, PARSE_AND_CHUNK, INDEX_VERSION, ACTIVATE, SWITCH_VERSION)
AFTER_PIVOT = (DELETE_OLD_VECTORS, INVALIDATE_CACHE, COMPLETE)


@dataclass
class Updates(Saga):
    updates: UpdateRequests = None  # type: ignore[assignment]

    def update(
        self, document_id: str, request: UpdateDocumentRequest | None = None, *, key: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        request = request or TO_GEARBOX
        operation = self.updates.update(
            document_id, request, ALICE, f"cid-u-{document_id}", idempotency_key=key
        )
        assert operation.version is not None
        return operation.operation_id, wait_for_execution(
            self.sfn, self.update_arn(operation.operation_id), timeout_s=60
        )

    def update_arn(self, name: str) -> str:
        return self.execution_arn(name, "RAGLINE_UPDATE_STATE_MACHINE_ARN")

    def assert_update_invariants(self, document_id: str) -> int:
        """The invariants of the module's docstring; returns the version the document is at."""
        document = self.documents.get(document_id)
        assert document is not None
        assert document.status == DocumentStatus.INDEXED
        assert self.documents.reserved_version(document_id) is None
        if document.operation_id is not None:  # held only by a finished operation
            held = self.operations.get(document.operation_id)
            assert held is None or held.operation.status.finished
        version = document.version
        assert self.index.count(document_id, version, active=True) == document.chunk_count
        assert self.index.count(document_id, version) == document.chunk_count
        others = self.index.count(document_id) - document.chunk_count
        assert others >= 0
        for other in range(1, version + 3):
            if other != version:
                assert self.index.count(document_id, other, active=True) == 0, f"v{other} searchable"
        old_hits = self.index.keyword_search("turbine blade", ENG, 10)
        new_hits = self.index.keyword_search("gearbox lubrication", OPS, 10)
        found = {h.chunk.version for h in [*old_hits, *new_hits] if h.chunk.document_id == document_id}
        assert found == {version}
        if version == 1:
            assert document.allowed_groups == ["eng"] and document.title == "Manual doc-a"
            assert [h for h in new_hits if h.chunk.document_id == document_id] == []
            assert not [k for k in self.objects(document_id) if "/v2/" in k], "objects of v2 left"
        else:
            assert document.allowed_groups == ["ops"] and document.title == "Gearbox"
            assert [h for h in old_hits if h.chunk.document_id == document_id] == []
            assert [h.chunk.allowed_groups for h in new_hits if h.chunk.document_id == document_id][0] == [
                "ops"
            ]
        return version


@pytest.fixture
def saga(aws_platform: AwsPlatform, tmp_path: Path) -> Iterator[Updates]:
    settings = aws_platform.settings.model_copy(
        update={
            "operations_table": physical_name("operations"),
            "delete_state_machine_arn": aws_platform.environment["RAGLINE_DELETE_STATE_MACHINE_ARN"],
            "update_state_machine_arn": aws_platform.environment["RAGLINE_UPDATE_STATE_MACHINE_ARN"],
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
    clients = {"s3": aws_platform.s3, "dynamodb": aws_platform.dynamodb, "events": aws_platform.events}
    ingest_handler = ingest_saga.make_handler(
        lambda: wiring.build_delete_saga(settings, **clients),
        lambda: wiring.build_update_saga(settings, tokenizer=TOKENIZER, **clients),
    )
    index_handler = index_saga.make_handler(lambda: service)
    functions = {
        "ingest-saga": LocalFunction(TOPOLOGY.function("ingest-saga"), handler=fault.wrap(ingest_handler)),
        "index-saga": LocalFunction(TOPOLOGY.function("index-saga"), handler=fault.wrap(index_handler)),
    }
    invoker = HandlerInvoker({f.name: f.invoke for f in functions.values()})
    with executing_state_machines(), lambda_tasks_routed(invoker):
        for name, arn in (
            (DELETE_STATE_MACHINE, settings.delete_state_machine_arn),
            (UPDATE_STATE_MACHINE, settings.update_state_machine_arn),
        ):
            created = sfn.create_state_machine(
                name=physical_name(name),
                definition=export_path(name).read_text(),
                roleArn=STATES_ROLE,
            )
            assert created["stateMachineArn"] == arn
        documents = DynamoDocumentRepository(aws_platform.dynamodb, settings.documents_table)
        operations = DynamoOperationRepository(aws_platform.dynamodb, settings.operations_table)
        yield Updates(
            platform=aws_platform,
            index=index,
            service=service,
            documents=documents,
            operations=operations,
            requests=DeletionRequests(
                documents,
                operations,
                StepFunctionsStarter(sfn, settings.delete_state_machine_arn),
                ttl=timedelta(days=30),
            ),
            sfn=sfn,
            fault=fault,
            updates=wiring.build_update_requests(
                settings, s3=aws_platform.s3, dynamodb=aws_platform.dynamodb, stepfunctions=sfn
            ),
        )


# --------------------------------------------------------------------------------------------


def test_an_update_switches_content_groups_and_title(saga: Updates) -> None:
    saga.seed("doc-a")
    saga.seed("doc-b")
    operation_id, execution = saga.update("doc-a")
    assert execution["status"] == "SUCCEEDED", execution
    record = saga.operations.get(operation_id)
    assert record is not None
    assert record.operation.status == OperationStatus.SUCCEEDED
    assert record.operation.version == 2
    assert [s.name for s in record.operation.steps] == list(UPDATE_STEPS)
    assert saga.assert_update_invariants("doc-a") == 2
    document = saga.documents.get("doc-a")
    assert document is not None and document.operation_id is None
    saga.assert_invariants("doc-b")
    # Its old vectors are gone, not merely hidden.
    assert saga.index.count("doc-a", 1) == 0
    updated = [e for e in saga.published() if e["detail-type"] == DocumentUpdated.DETAIL_TYPE]
    assert [
        (e["detail"]["document_id"], e["detail"]["version"], e["detail"]["previous_version"]) for e in updated
    ] == [("doc-a", 2, 1)]
    invalidations = saga.platform.events_on("answer-cache", DocumentUpdated)
    assert [(e.detail.document_id, e.detail.collection) for e in invalidations] == [("doc-a", "default")]
    # A second update builds on the first; a metadata-only one reuses the current original.
    _, again = saga.update("doc-a", UpdateDocumentRequest(metadata={"team": "ops"}))
    assert again["status"] == "SUCCEEDED"
    document = saga.documents.get("doc-a")
    assert document is not None and document.version == 3 and document.source_version == 2
    assert document.metadata == {"team": "ops"} and document.allowed_groups == ["ops"]
    assert saga.index.count("doc-a", 3, active=True) == document.chunk_count
    assert saga.index.count("doc-a") == document.chunk_count


FAULTS = [
    *[pytest.param(step, False, id=f"{step}-before") for step in UPDATE_STEPS],
    *[pytest.param(step, True, id=f"{step}-after") for step in BEFORE_PIVOT],
]


@pytest.mark.parametrize(("step", "after"), FAULTS)
def test_a_fault_at_any_step_leaves_the_invariants(saga: Updates, step: str, after: bool) -> None:
    saga.fault.step, saga.fault.after = step, after
    saga.seed("doc-a")
    saga.seed("doc-b")
    operation_id, execution = saga.update("doc-a")
    record = saga.operations.get(operation_id)
    assert record is not None
    version = saga.assert_update_invariants("doc-a")
    saga.assert_invariants("doc-b")
    events = saga.published()
    failed = [e for e in events if e["detail-type"] == DocumentFailed.DETAIL_TYPE]
    if (step, after) == (SWITCH_VERSION, True):  # the switch happened, its answer was lost: go on
        assert execution["status"] == "SUCCEEDED"
        assert record.operation.status == OperationStatus.SUCCEEDED
        assert version == 2 and failed == []
        return
    assert execution["status"] == "FAILED"
    assert record.operation.status == OperationStatus.FAILED
    assert record.operation.error is not None and record.operation.error.code == "InjectedFault"
    if step in BEFORE_PIVOT:  # compensated: the old version, searchable, unchanged; said so
        assert version == 1
        assert saga.index.count("doc-a") == 3
        assert [e["detail"]["code"] for e in failed] == ["update_failed"]
        # Nothing is left held or reserved: the next update runs.
        saga.fault.step = None
        _, retried = saga.update("doc-a")
        assert retried["status"] == "SUCCEEDED"
        assert saga.assert_update_invariants("doc-a") == 2
    else:  # after the pivot: the new version stands; no compensation, no DocumentFailed
        assert version == 2 and failed == []
        leftover = saga.index.count("doc-a", 1)
        assert leftover == (3 if step == DELETE_OLD_VECTORS else 0)  # inactive orphans (docs/saga.md)


def test_the_same_update_submitted_three_times_runs_once(saga: Updates) -> None:
    saga.seed("doc-a")
    first, done = saga.update("doc-a", key="update-doc-a-1")
    assert done["status"] == "SUCCEEDED"
    for n in range(2):
        again = saga.updates.update(
            "doc-a", TO_GEARBOX, ALICE, f"cid-again-{n}", idempotency_key="update-doc-a-1"
        )
        assert again.operation_id == first and again.status == OperationStatus.SUCCEEDED
    machine = saga.platform.environment["RAGLINE_UPDATE_STATE_MACHINE_ARN"]
    assert len(saga.sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    assert saga.assert_update_invariants("doc-a") == 2


def test_two_concurrent_updates_end_in_one_version_and_one_409(saga: Updates) -> None:
    saga.seed("doc-a")
    saga.fault.step, saga.fault.gate = PARSE_AND_CHUNK, threading.Event()
    first = saga.updates.update("doc-a", TO_GEARBOX, ALICE, "c1")
    with pytest.raises(DocumentBusy):
        saga.updates.update("doc-a", UpdateDocumentRequest(title="Other"), ALICE, "c2")
    saga.fault.gate.set()
    done = wait_for_execution(saga.sfn, saga.update_arn(first.operation_id), timeout_s=60)
    assert done["status"] == "SUCCEEDED"
    machine = saga.platform.environment["RAGLINE_UPDATE_STATE_MACHINE_ARN"]
    assert len(saga.sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    assert saga.assert_update_invariants("doc-a") == 2


def test_a_delete_racing_an_update_waits_and_leaves_nothing(saga: Updates) -> None:
    saga.seed("doc-a")
    saga.fault.step, saga.fault.gate = INDEX_VERSION, threading.Event()
    update = saga.updates.update("doc-a", TO_GEARBOX, ALICE, "c1")
    delete = saga.requests.delete("doc-a", ALICE, "c2")
    assert delete.operation_id != update.operation_id
    saga.fault.gate.set()
    updated = wait_for_execution(saga.sfn, saga.update_arn(update.operation_id), timeout_s=60)
    deleted = wait_for_execution(saga.sfn, saga.execution_arn(delete.operation_id), timeout_s=90)
    assert (updated["status"], deleted["status"]) == ("SUCCEEDED", "SUCCEEDED")
    assert saga.documents.get("doc-a") is None
    assert saga.index.count("doc-a") == 0
    assert saga.objects("doc-a") == []


def test_an_update_of_a_busy_or_invisible_document_is_refused(saga: Updates) -> None:
    saga.seed("doc-c", groups=("finance",))
    with pytest.raises(DocumentNotFound):
        saga.updates.update(
            "doc-c",
            UpdateDocumentRequest(title="x"),
            Principal(user_id="carol", groups=frozenset({"eng"})),
            "c",
        )
    assert json.loads(export_path(UPDATE_STATE_MACHINE).read_text())["StartAt"] == RESERVE_VERSION
