"""Reconciliation: the documents table (what should be searchable) against the search index (what
is), reporting and repairing the two states the sagas must never leave (docs/saga.md):

- orphaned vectors: chunks of a version that is not the document's searchable one (an older or a
  failed newer version, a failed or deleted document, a document with no record);
- phantom documents: a document the table calls searchable (`indexed`) whose version the index
  lacks, in whole or in part, or holds hidden.

Orphans are deleted; a phantom's version is restored from its chunk file, and when that is gone
too the document is marked failed (`vectors_lost`) so it stops claiming to be searchable. Events a
saga wrote to its outbox and never published (a PublishDeleted that failed after its retries) are
published once they are older than `announce_after`.

Consistency without locks: the index is listed before the table is read. Vectors are only ever
written after their document's record exists (and, for an update, after its version is reserved
under an operation), so any vector the listing holds belongs to a record, reservation or operation
that the later read of the table sees, unless it has since gone (then the vector is an orphan).
Documents a saga or the ingestion pipeline is working on are skipped. Every repair re-reads its
document (strongly consistent) and goes ahead only if it is as planned, so a saga that started in
between is left alone; what remains racy (a saga starting within that re-read and the repair) is
found and repaired by the next run, which is why this runs on a schedule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ragline.contracts import Document, DocumentDeleted, DocumentStatus, EventDetail, IndexedVersion, utcnow

from .errors import VectorsLost
from .operations import running_holder
from .ports import (
    DocumentRepository,
    EventPublisher,
    IndexMaintenance,
    OperationRepository,
    PendingEvent,
    RestoreFailed,
    chunks_key,
    fail_document,
)

# Events a saga may leave in the outbox, by detail type.
OUTBOX_EVENTS: dict[str, type[EventDetail]] = {DocumentDeleted.DETAIL_TYPE: DocumentDeleted}
# An outbox item younger than this may still be settled by its own saga step.
ANNOUNCE_AFTER = timedelta(minutes=15)

# Statuses whose vectors are still being written or whose outcome is not known yet.
IN_FLIGHT = frozenset(
    {
        DocumentStatus.AWAITING_UPLOAD,
        DocumentStatus.RECEIVED,
        DocumentStatus.PARSING,
        DocumentStatus.CHUNKED,
        DocumentStatus.EMBEDDING,
    }
)


class FindingKind(StrEnum):
    ORPHANED_VECTORS = "orphaned_vectors"
    PHANTOM_DOCUMENT = "phantom_document"


class Action(StrEnum):
    DELETE_VECTORS = "delete_vectors"
    RESTORE_VERSION = "restore_version"


class Outcome(StrEnum):
    PLANNED = "planned"  # a dry run: nothing was changed
    REPAIRED = "repaired"
    MARKED_FAILED = "marked_failed"  # a phantom that could not be restored
    SKIPPED = "skipped"  # the document changed since the plan (a saga started, say)
    FAILED = "failed"  # the repair itself failed; the next run tries again


@dataclass
class Finding:
    kind: FindingKind
    document_id: str
    version: int | None  # None: every version of the document
    reason: str
    action: Action
    chunks: int  # orphaned chunks, or the chunks the version should have
    outcome: Outcome = Outcome.PLANNED
    detail: str | None = None
    # What the plan saw of the document (None: no record); a repair needs it unchanged.
    seen: Document | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "document_id": self.document_id,
            "version": self.version,
            "reason": self.reason,
            "action": self.action.value,
            "chunks": self.chunks,
            "outcome": self.outcome.value,
            **({"detail": self.detail} if self.detail else {}),
        }


@dataclass
class Report:
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    documents: int = 0
    index_versions: int = 0
    in_flight: int = 0
    findings: list[Finding] = field(default_factory=list)
    owed_events: int = 0  # in a saga's outbox for longer than announce_after
    published_events: int = 0  # of those, published now

    @property
    def unresolved(self) -> int:
        """What is still wrong after this run: every finding of a dry run, else failed repairs, and
        owed events not published."""
        wrong = len(self.findings) if self.dry_run else self.count(outcome=Outcome.FAILED)
        return wrong + self.owed_events - self.published_events

    def count(self, kind: FindingKind | None = None, outcome: Outcome | None = None) -> int:
        return sum(
            1
            for f in self.findings
            if (kind is None or f.kind == kind) and (outcome is None or f.outcome == outcome)
        )

    @property
    def orphaned_chunks(self) -> int:
        return sum(f.chunks for f in self.findings if f.kind == FindingKind.ORPHANED_VECTORS)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "documents": self.documents,
            "index_versions": self.index_versions,
            "in_flight": self.in_flight,
            "orphaned_versions": self.count(FindingKind.ORPHANED_VECTORS),
            "orphaned_chunks": self.orphaned_chunks,
            "phantom_documents": self.count(FindingKind.PHANTOM_DOCUMENT),
            "repaired": self.count(outcome=Outcome.REPAIRED),
            "marked_failed": self.count(outcome=Outcome.MARKED_FAILED),
            "skipped": self.count(outcome=Outcome.SKIPPED),
            "failed": self.count(outcome=Outcome.FAILED),
            "owed_events": self.owed_events,
            "published_events": self.published_events,
            "unresolved": self.unresolved,
            "findings": [f.to_json() for f in self.findings],
        }


def plan(
    inventory: Iterable[IndexedVersion],
    documents: Iterable[Document],
    *,
    busy: Callable[[Document], bool],
) -> tuple[list[Finding], int]:
    """The findings (pure: no I/O but `busy`, which says whether a document is held by a running
    operation) and how many documents were skipped as in flight."""
    held: dict[str, list[IndexedVersion]] = defaultdict(list)
    for entry in inventory:
        if entry.active or entry.inactive:
            held[entry.document_id].append(entry)
    findings: list[Finding] = []
    in_flight = 0
    seen_ids = set()
    for document in documents:
        seen_ids.add(document.id)
        versions = held.get(document.id, [])
        if document.status in IN_FLIGHT or (document.operation_id is not None and busy(document)):
            in_flight += 1
            continue
        searchable = document.version if document.status == DocumentStatus.INDEXED else None
        for entry in versions:
            if entry.version != searchable:
                why = (
                    f"version {entry.version} of a document at version {document.version}"
                    if searchable is not None
                    else f"document is {document.status.value}"
                )
                findings.append(_orphan(entry, why, document))
        if searchable is not None and document.chunk_count:
            entry = next((v for v in versions if v.version == searchable), None)
            active, inactive = (entry.active, entry.inactive) if entry else (0, 0)
            if active < document.chunk_count or inactive:
                findings.append(
                    Finding(
                        FindingKind.PHANTOM_DOCUMENT,
                        document.id,
                        searchable,
                        f"indexed with {document.chunk_count} chunks; the index finds {active}"
                        + (f" ({inactive} hidden)" if inactive else ""),
                        Action.RESTORE_VERSION,
                        document.chunk_count,
                        seen=document,
                    )
                )
    for document_id in sorted(held.keys() - seen_ids):
        chunks = sum(v.active + v.inactive for v in held[document_id])
        findings.append(
            Finding(
                FindingKind.ORPHANED_VECTORS,
                document_id,
                None,
                "no such document",
                Action.DELETE_VECTORS,
                chunks,
            )
        )
    return findings, in_flight


def _orphan(entry: IndexedVersion, why: str, document: Document) -> Finding:
    return Finding(
        FindingKind.ORPHANED_VECTORS,
        entry.document_id,
        entry.version,
        why,
        Action.DELETE_VECTORS,
        entry.active + entry.inactive,
        seen=document,
    )


class Reconciler:
    def __init__(
        self,
        documents: DocumentRepository,
        operations: OperationRepository,
        index: IndexMaintenance,
        publisher: EventPublisher,
        *,
        clock: Callable[[], datetime] = utcnow,
        announce_after: timedelta = ANNOUNCE_AFTER,
    ) -> None:
        self._documents = documents
        self._operations = operations
        self._index = index
        self._publisher = publisher
        self._clock = clock
        self._announce_after = announce_after

    def run(self, *, dry_run: bool) -> Report:
        report = Report(dry_run=dry_run, started_at=self._clock())
        inventory = list(self._index.inventory())  # first: see the module docstring
        documents = list(self._documents.scan())
        report.index_versions, report.documents = len(inventory), len(documents)
        report.findings, report.in_flight = plan(inventory, documents, busy=self._busy)
        if not dry_run:
            for finding in report.findings:
                self._repair(finding)
        owed = [
            e
            for e in self._documents.pending_events()
            if report.started_at - e.written_at >= self._announce_after
        ]
        report.owed_events = len(owed)
        if not dry_run:
            report.published_events = sum(self._publish(event) for event in owed)
        report.finished_at = self._clock()
        return report

    def _publish(self, owed: PendingEvent) -> bool:
        kind = OUTBOX_EVENTS.get(owed.detail_type)
        if kind is None:  # a newer producer's event: leave it for the code that knows it
            return False
        try:
            self._publisher.publish(kind.model_validate_json(owed.detail))
            self._documents.settle(owed.key)
        except Exception:  # noqa: BLE001 (the next run tries again; the others go ahead)
            return False
        return True

    def _busy(self, document: Document) -> bool:
        return running_holder(self._operations, document) is not None

    def _unchanged(self, finding: Finding) -> bool:
        now = self._documents.get(finding.document_id)
        if finding.seen is None or now is None:
            return now is None and finding.seen is None
        before = finding.seen
        same = (now.status, now.version, now.operation_id) == (
            before.status,
            before.version,
            before.operation_id,
        )
        return same and not self._busy(now)

    def _repair(self, finding: Finding) -> None:
        try:
            if not self._unchanged(finding):
                finding.outcome, finding.detail = Outcome.SKIPPED, "the document changed since the plan"
            elif finding.action == Action.DELETE_VECTORS:
                deleted = self._index.delete_vectors(finding.document_id, finding.version)
                finding.outcome, finding.detail = Outcome.REPAIRED, f"{deleted} chunks deleted"
            else:
                self._restore(finding)
        except Exception as exc:  # noqa: BLE001 (one failed repair must not stop the others)
            finding.outcome, finding.detail = Outcome.FAILED, f"{type(exc).__name__}: {exc}"

    def _restore(self, finding: Finding) -> None:
        document = finding.seen
        assert document is not None and finding.version is not None
        try:
            restored = self._index.restore_version(
                document.id, finding.version, chunks_key(document.id, finding.version), finding.chunks
            )
        except RestoreFailed as exc:
            fail_document(
                self._documents,
                self._publisher,
                document,
                VectorsLost(f"the index lacks version {finding.version} and it cannot be restored: {exc}"),
                expected={DocumentStatus.INDEXED},
                correlation_id=document.correlation_id,
                what="reconcile-failed",
                now=self._clock(),
            )
            finding.outcome, finding.detail = Outcome.MARKED_FAILED, str(exc)
            return
        finding.outcome, finding.detail = Outcome.REPAIRED, f"{restored} chunks searchable"
