"""ingest-status: consumes the ingest-status queue, where the bus rule delivers the index's
outcomes (DocumentIndexed, DocumentFailed from source ragline.index), and applies them to the
documents table. Updates are conditional on the version and on the record being `chunked`, so
duplicates and late events about older versions change nothing and are acknowledged."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.ingest import wiring
from functions.ingest.domain.service import StatusService
from ragline.contracts import DocumentFailed, DocumentIndexed
from ragline.events import parse_envelope
from ragline.observability import logger as make_logger

logger = make_logger("ingest-status")

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]
_OUTCOMES: dict[str, type[DocumentIndexed] | type[DocumentFailed]] = {
    DocumentIndexed.DETAIL_TYPE: DocumentIndexed,
    DocumentFailed.DETAIL_TYPE: DocumentFailed,
}


def make_handler(status_service: Callable[[], StatusService]) -> Handler:
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> bool:
        body = json.loads(record.body)
        detail_type = body.get("detail-type")
        if detail_type not in _OUTCOMES:
            raise ValueError(f"unexpected detail-type {detail_type!r}")
        event = parse_envelope(body, _OUTCOMES[detail_type]).detail
        logger.set_correlation_id(event.metadata.correlation_id)
        logger.append_keys(document_id=event.document_id, version=event.version)
        changed = status_service().apply(event)
        logger.info(
            "outcome applied" if changed else "outcome ignored (duplicate or stale)",
            extra={"detail_type": detail_type},
        )
        return changed

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler


handler = make_handler(wiring.status_service)
