"""The reconciler's plan: which (document, version) pairs are orphaned vectors or phantom documents,
from the index's inventory and the documents table, and which documents are left alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from functions.ingest.domain.reconcile import IN_FLIGHT, Action, FindingKind, plan
from ragline.contracts import ContentType, Document, DocumentStatus, IndexedVersion

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def doc(
    document_id: str,
    *,
    version: int = 1,
    status: DocumentStatus = DocumentStatus.INDEXED,
    chunks: int | None = 3,
    operation: str | None = None,
) -> Document:
    return Document(
        id=document_id,
        version=version,
        title=document_id,
        content_type=ContentType.TEXT,
        size_bytes=10,
        allowed_groups=["eng"],
        owner="alice",
        status=status,
        chunk_count=chunks,
        correlation_id="c",
        created_at=NOW,
        updated_at=NOW,
        operation_id=operation,
    )


def held(document_id: str, version: int, active: int, inactive: int = 0) -> IndexedVersion:
    return IndexedVersion(document_id=document_id, version=version, active=active, inactive=inactive)


def findings(inventory, documents, busy=lambda d: False):
    found, in_flight = plan(inventory, documents, busy=busy)
    return {(f.kind, f.document_id, f.version, f.chunks, f.action) for f in found}, in_flight


def test_a_consistent_table_and_index_have_no_findings() -> None:
    assert findings([held("a", 2, 3), held("b", 1, 5)], [doc("a", version=2), doc("b", chunks=5)]) == (
        set(),
        0,
    )


def test_vectors_of_other_versions_and_of_unknown_documents_are_orphans() -> None:
    inventory = [
        held("a", 1, 0, 3),
        held("a", 2, 3),
        held("a", 3, 0, 2),
        held("gone", 1, 4),
        held("gone", 2, 0, 1),
    ]
    found, _ = findings(inventory, [doc("a", version=2)])
    assert found == {
        (FindingKind.ORPHANED_VECTORS, "a", 1, 3, Action.DELETE_VECTORS),
        (FindingKind.ORPHANED_VECTORS, "a", 3, 2, Action.DELETE_VECTORS),
        (FindingKind.ORPHANED_VECTORS, "gone", None, 5, Action.DELETE_VECTORS),
    }


@pytest.mark.parametrize("status", [DocumentStatus.FAILED, DocumentStatus.DELETING])
def test_every_vector_of_a_settled_unsearchable_document_is_orphaned(status: DocumentStatus) -> None:
    found, _ = findings([held("a", 1, 2, 1)], [doc("a", status=status)])
    assert found == {(FindingKind.ORPHANED_VECTORS, "a", 1, 3, Action.DELETE_VECTORS)}


@pytest.mark.parametrize(
    ("inventory", "why"),
    [
        ([], "absent"),
        ([held("a", 1, 2)], "partial"),
        ([held("a", 1, 0, 3)], "hidden"),
        ([held("a", 1, 2, 1)], "mixed"),
    ],
)
def test_an_indexed_version_missing_from_searches_is_a_phantom(inventory, why) -> None:
    found, _ = findings(inventory, [doc("a")])
    assert found == {(FindingKind.PHANTOM_DOCUMENT, "a", 1, 3, Action.RESTORE_VERSION)}, why


def test_documents_in_flight_are_skipped_whatever_the_index_holds() -> None:
    pipeline = [doc(f"p{n}", status=status) for n, status in enumerate(sorted(IN_FLIGHT))]
    running = doc("r", version=2, operation="op-running")
    finished = doc("f", version=2, operation="op-finished")
    inventory = [held("p0", 1, 1), held("r", 2, 0), held("r", 3, 0, 3), held("f", 3, 0, 3)]
    found, in_flight = findings(
        inventory, [*pipeline, running, finished], busy=lambda d: d.operation_id == "op-running"
    )
    assert in_flight == len(pipeline) + 1
    # a finished operation still recorded as the holder does not protect the document
    assert found == {
        (FindingKind.ORPHANED_VECTORS, "f", 3, 3, Action.DELETE_VECTORS),
        (FindingKind.PHANTOM_DOCUMENT, "f", 2, 3, Action.RESTORE_VERSION),
    }


def test_an_empty_inventory_entry_is_not_an_orphan() -> None:
    assert findings([held("gone", 1, 0, 0)], []) == (set(), 0)
