"""index-worker: consumes the index queue (ChunksReady, sent point to point by ingest), embeds the
chunks and writes them to the search index, then publishes DocumentIndexed or DocumentFailed
(source ragline.index) to the bus. Failures are reported per record (partial batch response):
permanent ones are published and acknowledged, transient ones raise so SQS redelivers the record
(and, after maxReceiveCount, moves it to the dead-letter queue)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.index import wiring
from functions.index.domain.service import IndexOutcome, IndexService
from ragline.contracts import ChunksReady
from ragline.events import parse_envelope
from ragline.observability import logger as make_logger

logger = make_logger("index-worker")

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def make_handler(index_service: Callable[[], IndexService]) -> Handler:
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> str:
        event = parse_envelope(record.body, ChunksReady).detail
        logger.set_correlation_id(event.metadata.correlation_id)
        logger.append_keys(document_id=event.document_id, version=event.version)
        result = index_service().index(event)
        log = logger.warning if result.outcome == IndexOutcome.FAILED else logger.info
        log(
            f"document {result.outcome}",
            extra={"indexed_count": result.indexed_count, "reason": result.reason},
        )
        return result.outcome

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler


handler = make_handler(wiring.index_service)
