"""ingest-status: consumes the ingest-status queue, where the bus rule delivers the index's
progress and outcomes (IndexingStarted, DocumentIndexed, DocumentFailed from source ragline.index),
and applies them to the documents table. Updates are conditional on the version and on the status
moving forwards (chunked -> embedding -> indexed/failed), so duplicates, late events about older
versions and events that arrive out of order change nothing and are acknowledged."""

from __future__ import annotations

from collections.abc import Callable

from functions.ingest import wiring
from functions.ingest.domain.status import StatusService
from ragline.contracts import DocumentFailed, DocumentIndexed, IndexingStarted
from ragline.messaging import Handler, sqs_handler
from ragline.observability import logger as make_logger

logger = make_logger("ingest-status")


def make_handler(status_service: Callable[[], StatusService]) -> Handler:
    def handle(event: IndexingStarted | DocumentIndexed | DocumentFailed) -> bool:
        logger.append_keys(document_id=event.document_id, version=event.version)
        changed = status_service().apply(event)
        logger.info(
            "outcome applied" if changed else "outcome ignored (duplicate or stale)",
            extra={"detail_type": event.DETAIL_TYPE},
        )
        return changed

    return sqs_handler(logger, [IndexingStarted, DocumentIndexed, DocumentFailed], handle)


handler = make_handler(wiring.status_service)
