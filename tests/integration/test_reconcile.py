"""The reconciler (functions/ingest/domain/reconcile.py) on the sagas' own platform: the documents
table and operations in moto, a real LanceDB index behind the real index service, reached through
the real `index-maintenance` handler by Lambda Invoke, exactly as `ingest-reconcile` reaches it.

Holes are made the two ways they arise: by the update saga itself (a DeleteOldVectors that failed
after its retries leaves the old version's vectors, by design) and by planting each kind of damage
the sagas guard against (vectors of a deleted, failed or replaced version; a searchable version
missing, partly missing or hidden; a version whose chunk file is gone too). After a repair the
invariants hold, and a second run finds nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from functions.index.handlers import maintenance
from functions.ingest import wiring
from functions.ingest.adapters.index_maintenance import LambdaIndexMaintenance
from functions.ingest.domain.ports import OperationRecord, chunks_key
from functions.ingest.domain.reconcile import FindingKind, Outcome, Reconciler, Report
from functions.ingest.handlers import reconcile as reconcile_handler
from infra.cdk.stacks.ops import RECONCILE_METRICS
from ragline.contracts import (
    DocumentDeleted,
    DocumentFailed,
    DocumentStatus,
    Operation,
    OperationKind,
    OperationStatus,
    utcnow,
)
from ragline.local.lambda_runtime import LocalFunction
from ragline.local.stepfunctions import HandlerInvoker
from ragline.saga import (
    ACTIVATE,
    DELETE_OLD_VECTORS,
    DELETE_VECTORS,
    INDEX_VERSION,
    PUBLISH_DELETED,
    REINDEX,
    REMOVE_NEW_VERSION,
    UNMARK_DELETING,
)
from ragline.topology import TOPOLOGY, physical_name
from tests.integration.test_delete_saga import ENG
from tests.integration.test_update_saga import Updates
from tests.integration.test_update_saga import saga as saga  # noqa: F401 (the fixture)


@pytest.fixture
def reconciler(saga: Updates) -> Reconciler:
    function = LocalFunction(
        TOPOLOGY.function("index-maintenance"), handler=maintenance.make_handler(lambda: saga.service)
    )
    # Pages of two: every run here crosses pages of the inventory.
    index = LambdaIndexMaintenance(
        HandlerInvoker({function.name: function.invoke}), physical_name("index-maintenance"), page_size=2
    )
    platform = saga.platform
    return wiring.build_reconciler(
        platform.settings, dynamodb=platform.dynamodb, events=platform.events, index=index
    )


def summary(report: Report) -> set[tuple[str, str, int | None, int]]:
    return {(f.kind.value, f.document_id, f.version, f.chunks) for f in report.findings}


def snapshot(saga: Updates, *document_ids: str) -> dict[str, Any]:
    return {d: (saga.index.count(d, active=True), saga.index.count(d, active=False)) for d in document_ids}


def test_every_saga_outcome_leaves_nothing_to_repair(saga: Updates, reconciler: Reconciler) -> None:
    for name in ("doc-a", "doc-b", "doc-c"):
        saga.seed(name)
    assert saga.update("doc-a")[1]["status"] == "SUCCEEDED"
    assert saga.delete("doc-b")[1]["status"] == "SUCCEEDED"
    assert saga.documents.pending_events() == []  # the delete's outbox item was settled
    report = reconciler.run(dry_run=False)
    assert report.findings == [] and report.owed_events == 0
    assert (report.documents, report.index_versions, report.in_flight) == (2, 2, 0)


def test_the_old_version_a_failed_delete_old_vectors_leaves_is_deleted(
    saga: Updates, reconciler: Reconciler
) -> None:
    saga.fault.step = DELETE_OLD_VECTORS
    saga.seed("doc-a")
    assert saga.update("doc-a")[1]["status"] == "FAILED"
    assert saga.index.count("doc-a", 1, active=False) == 3  # docs/saga.md: inactive orphans

    dry = reconciler.run(dry_run=True)
    assert summary(dry) == {("orphaned_vectors", "doc-a", 1, 3)}
    assert [f.outcome for f in dry.findings] == [Outcome.PLANNED]
    assert saga.index.count("doc-a", 1) == 3  # a dry run changes nothing

    repaired = reconciler.run(dry_run=False)
    assert [(f.outcome, f.detail) for f in repaired.findings] == [(Outcome.REPAIRED, "3 chunks deleted")]
    assert saga.index.count("doc-a", 1) == 0
    assert saga.assert_update_invariants("doc-a") == 2
    assert reconciler.run(dry_run=False).findings == []


# A step fails, then so does its compensation: the operation ends failed and what the compensation
# should have undone stays. The reconciler is what puts it right (docs/saga.md, "Known limits").
COMPENSATION_FAULTS = [
    # the delete never deleted anything, and the status was not put back: a `deleting` document
    # whose vectors searches still find
    pytest.param(DELETE_VECTORS, False, REINDEX, UNMARK_DELETING, {("orphaned_vectors", 1, 3)}, id="delete"),
    # the vectors went (the answer was lost) and were not written back: `deleting`, no vectors
    pytest.param(DELETE_VECTORS, True, REINDEX, None, set(), id="delete-lost"),
    # v2 written inactive, not removed: hidden orphans
    pytest.param(
        INDEX_VERSION, True, REMOVE_NEW_VERSION, None, {("orphaned_vectors", 2, 1)}, id="update-indexed"
    ),
    # v2 activated and v1 hidden, not undone: searches find the unswitched v2 (with its new groups)
    # and not the document's own v1
    pytest.param(
        ACTIVATE,
        True,
        REMOVE_NEW_VERSION,
        None,
        {("orphaned_vectors", 2, 1), ("phantom_document", 1, 3)},
        id="update-activated",
    ),
]


@pytest.mark.parametrize(("step", "after", "compensation", "also", "found"), COMPENSATION_FAULTS)
def test_what_a_failed_compensation_leaves_the_reconciler_repairs(
    saga: Updates,
    reconciler: Reconciler,
    step: str,
    after: bool,
    compensation: str,
    also: str | None,
    found: set[tuple[str, int, int]],
) -> None:
    saga.fault.step, saga.fault.after = step, after
    saga.fault.also = frozenset({compensation, *([also] if also else [])})
    saga.seed("doc-a")
    operation_id, execution = saga.delete("doc-a") if step == DELETE_VECTORS else saga.update("doc-a")
    assert execution["status"] == "FAILED"
    record = saga.operations.get(operation_id)
    assert record is not None and record.operation.status == OperationStatus.FAILED

    report = reconciler.run(dry_run=False)
    assert {(f.kind.value, f.version, f.chunks) for f in report.findings} == found
    assert {f.outcome for f in report.findings} <= {Outcome.REPAIRED}
    document = saga.documents.get("doc-a")
    assert document is not None
    if step == DELETE_VECTORS:  # `deleting` with no vectors, which a new DELETE finishes
        saga.assert_invariants("doc-a")
        saga.fault.step, saga.fault.also = None, frozenset()
        assert saga.delete("doc-a")[1]["status"] == "SUCCEEDED"
        saga.assert_invariants("doc-a")
    else:  # the document's own version, and only it, searchable again
        assert (document.status, document.version) == (DocumentStatus.INDEXED, 1)
        assert saga.index.count("doc-a", 1, active=True) == saga.index.count("doc-a") == 3
        hits = saga.index.keyword_search("turbine blade", ENG, 10)
        assert {h.chunk.version for h in hits if h.chunk.document_id == "doc-a"} == {1}
    assert reconciler.run(dry_run=False).findings == []


def test_planted_orphans_and_phantoms_are_reported_then_repaired(
    saga: Updates, reconciler: Reconciler
) -> None:
    names = ("absent", "hidden", "partial", "lost", "deleted", "failed", "embedding", "held", "fine")
    documents = {name: saga.seed(name) for name in names}
    index, s3, settings = saga.index, saga.platform.s3, saga.platform.settings
    # Phantoms: indexed in the table; the index lacks the version, hides it, or has part of it.
    index.delete_document("absent")
    index.set_active("hidden", 1, False)
    index.delete_document("partial")
    saga.service.index_version(_first_chunks(saga, "partial", 2), active=True)
    index.delete_document("lost")
    s3.delete_object(Bucket=settings.parsed_bucket, Key=chunks_key("lost", 1))
    # Orphans: a document without a record, a failed one.
    saga.platform.dynamodb.delete_item(TableName=settings.documents_table, Key={"id": {"S": "deleted"}})
    _set_status(saga, "failed", DocumentStatus.FAILED)
    # Left alone: the pipeline is writing it; a running operation holds it (both look damaged).
    _set_status(saga, "embedding", DocumentStatus.EMBEDDING)
    index.delete_document("embedding")
    _hold(saga, "held")
    index.delete_document("held")
    before = snapshot(saga, *names)

    dry = reconciler.run(dry_run=True)
    expected = {
        ("phantom_document", "absent", 1, 3),
        ("phantom_document", "hidden", 1, 3),
        ("phantom_document", "partial", 1, 3),
        ("phantom_document", "lost", 1, 3),
        ("orphaned_vectors", "deleted", None, 3),
        ("orphaned_vectors", "failed", 1, 3),
    }
    assert summary(dry) == expected
    assert dry.in_flight == 2
    assert snapshot(saga, *names) == before

    report = reconciler.run(dry_run=False)
    assert summary(report) == expected
    outcomes = {f.document_id: f.outcome for f in report.findings}
    assert outcomes.pop("lost") == Outcome.MARKED_FAILED
    assert set(outcomes.values()) == {Outcome.REPAIRED}
    for name in ("absent", "hidden", "partial", "fine"):
        saga.assert_invariants(name)
        hits = index.keyword_search(f"Manual {name} turbine blade", ENG, 20)
        assert {h.chunk.version for h in hits if h.chunk.document_id == name} == {1}
    for name in ("deleted", "failed"):
        assert index.count(name) == 0
    # The lost one no longer claims to be searchable, and says so.
    lost = saga.documents.get("lost")
    assert lost is not None and lost.status == DocumentStatus.FAILED
    assert lost.failure_code == "vectors_lost"
    failed = [e for e in saga.published() if e["detail-type"] == DocumentFailed.DETAIL_TYPE]
    assert [(e["detail"]["document_id"], e["detail"]["code"]) for e in failed] == [("lost", "vectors_lost")]
    # Nothing in flight was touched.
    assert snapshot(saga, "embedding", "held") == {"embedding": (0, 0), "held": (0, 0)}
    assert documents["held"].version == 1

    again = reconciler.run(dry_run=False)
    assert again.findings == [] and again.in_flight == 2


def test_a_document_changed_after_the_plan_is_left_alone(saga: Updates, reconciler: Reconciler) -> None:
    saga.seed("doc-a")
    saga.index.delete_document("doc-a")
    documents = reconciler._documents

    class ClaimedDuringTheRun:
        """The table as a concurrent delete leaves it: claimed right after the scan read it."""

        def __getattr__(self, name: str) -> Any:
            return getattr(documents, name)

        def scan(self) -> Iterator[Any]:
            yield from documents.scan()
            _hold(saga, "doc-a")

    reconciler._documents = ClaimedDuringTheRun()  # type: ignore[assignment]
    report = reconciler.run(dry_run=False)
    assert [(f.kind, f.outcome) for f in report.findings] == [(FindingKind.PHANTOM_DOCUMENT, Outcome.SKIPPED)]
    assert saga.index.count("doc-a") == 0


def test_a_delete_never_announced_is_announced_by_the_reconciler(
    saga: Updates, reconciler: Reconciler
) -> None:
    saga.fault.step = PUBLISH_DELETED
    saga.seed("doc-a")
    assert saga.delete("doc-a")[1]["status"] == "FAILED"
    assert saga.documents.get("doc-a") is None
    assert [e for e in saga.published() if e["detail-type"] == DocumentDeleted.DETAIL_TYPE] == []
    [owed] = saga.documents.pending_events()
    assert owed.detail_type == DocumentDeleted.DETAIL_TYPE

    early = reconciler.run(dry_run=False)  # its own step may still settle it: not owed yet
    assert (early.owed_events, early.published_events, early.unresolved) == (0, 0, 0)
    platform = saga.platform
    late = wiring.build_reconciler(
        platform.settings,
        dynamodb=platform.dynamodb,
        events=platform.events,
        index=reconciler._index,
        announce_after=timedelta(0),
    )
    dry = late.run(dry_run=True)
    assert (dry.owed_events, dry.published_events, dry.unresolved) == (1, 0, 1)
    report = late.run(dry_run=False)
    assert (report.owed_events, report.published_events, report.unresolved) == (1, 1, 0)
    deleted = [e for e in saga.published() if e["detail-type"] == DocumentDeleted.DETAIL_TYPE]
    assert [(e["detail"]["document_id"], e["detail"]["metadata"]["idempotency_key"]) for e in deleted] == [
        ("doc-a", owed.key)
    ]
    assert saga.documents.pending_events() == []
    assert late.run(dry_run=False).owed_events == 0


def test_the_scheduled_handler_reports_and_publishes_metrics(
    saga: Updates, reconciler: Reconciler, capsys: pytest.CaptureFixture[str]
) -> None:
    saga.seed("doc-a")
    saga.index.delete_document("doc-a")
    handle = reconcile_handler.make_handler(lambda: reconciler)
    dry = handle({"dry_run": True}, None)
    assert (dry["dry_run"], dry["phantom_documents"], dry["repaired"]) == (True, 1, 0)
    assert saga.index.count("doc-a") == 0
    scheduled = handle({"source": "aws.events", "detail-type": "Scheduled Event"}, None)
    assert (scheduled["dry_run"], scheduled["phantom_documents"], scheduled["repaired"]) == (False, 1, 1)
    assert saga.index.count("doc-a", 1, active=True) == 3
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    # Powertools writes each metric's values as a list (one value per add_metric in the record).
    assert [(r["mode"], r["PhantomDocuments"], r["Repaired"]) for r in records] == [
        ("dry_run", [1.0], [0.0]),
        ("repair", [1.0], [1.0]),
    ]
    [directive] = records[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Ragline"
    # everything the reconcile-findings alarm sums (tests/infra/test_reconcile_stack.py)
    assert {m["Name"] for m in directive["Metrics"]} >= {"OrphanedVectors", *RECONCILE_METRICS}
    assert directive["Dimensions"] == [["mode", "service"]] and records[1]["service"] == "ingest-reconcile"


# --------------------------------------------------------------------------------------------


def _first_chunks(saga: Updates, document_id: str, count: int) -> Any:
    """A chunk file with the first `count` chunks of version 1, written beside it (index_version
    checks that a file has the chunk count it is told)."""
    from functions.index.domain.service import ChunkFile

    s3, bucket = saga.platform.s3, saga.platform.settings.parsed_bucket
    body = s3.get_object(Bucket=bucket, Key=chunks_key(document_id, 1))["Body"].read().decode()
    key = f"parsed/{document_id}/partial.jsonl"
    s3.put_object(Bucket=bucket, Key=key, Body="\n".join(body.splitlines()[:count]).encode())
    return ChunkFile(document_id, 1, key, count)


def _set_status(saga: Updates, document_id: str, status: DocumentStatus) -> None:
    assert saga.documents.update_status(
        document_id, version=1, expected={DocumentStatus.INDEXED}, status=status, updated_at=utcnow()
    )


def _hold(saga: Updates, document_id: str) -> None:
    """A running operation holds the document, as MarkDeleting or ReserveVersion leaves it."""
    now = utcnow()
    operation_id = f"op-{document_id}"
    record = OperationRecord(
        operation=Operation(
            operation_id=operation_id,
            kind=OperationKind.DELETE,
            document_id=document_id,
            status=OperationStatus.RUNNING,
            created_at=now,
            updated_at=now,
        ),
        tenant=None,
        requester="alice",
        expires_at=now + timedelta(days=1),
        correlation_id="cid",
    )
    assert saga.operations.create(record)
    assert saga.documents.claim_operation(document_id, operation_id, holder=None)
