"""ingest-reconcile: the scheduled reconciliation of the documents table with the search index
(functions/ingest/domain/reconcile.py, docs/saga.md). An EventBridge schedule invokes it with any
event; `{"dry_run": true}` (what `ragline reconcile --dry-run` sends) reports without repairing.

Returns the report and publishes its counts as CloudWatch metrics (EMF, namespace Ragline): the
alarm on OrphanedVectors/PhantomDocuments is how operators learn a saga left something behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from functions.ingest import wiring
from functions.ingest.domain.reconcile import FindingKind, Outcome, Reconciler
from ragline.observability import logger as make_logger
from ragline.observability import metrics as make_metrics

logger = make_logger("ingest-reconcile")
metrics = make_metrics("ingest-reconcile")


def make_handler(reconciler: Callable[[], Reconciler]) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        dry_run = bool(isinstance(event, dict) and event.get("dry_run"))
        report = reconciler().run(dry_run=dry_run)
        counts = {
            "OrphanedVersions": report.count(FindingKind.ORPHANED_VECTORS),
            "OrphanedVectors": report.orphaned_chunks,
            "PhantomDocuments": report.count(FindingKind.PHANTOM_DOCUMENT),
            "Repaired": report.count(outcome=Outcome.REPAIRED),
            "MarkedFailed": report.count(outcome=Outcome.MARKED_FAILED),
            "RepairsFailed": report.count(outcome=Outcome.FAILED),
            "UnpublishedEvents": report.owed_events - report.published_events,
        }
        metrics.add_dimension(name="mode", value="dry_run" if dry_run else "repair")
        for name, value in counts.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.flush_metrics()  # one EMF record per run (and a run's dimension never leaks into the next)
        summary = report.to_json()
        level = logger.warning if report.findings else logger.info
        level("reconciled", extra={k: v for k, v in summary.items() if k != "findings"})
        for finding in report.findings:
            logger.warning("finding", extra=finding.to_json())
        return summary

    return handle


_handle = make_handler(wiring.reconciler)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handle(event, context)
