"""ingest-worker: consumes the ingest queue (DocumentUploaded, delivered by the bus rule) and
chunks each document. One SQS record = one document; failures are reported per record
(partial batch response), so one bad document never makes SQS redeliver the others.

- A document that cannot be parsed is a permanent failure: DocumentFailed is published, the
  record is marked failed, and the message is acknowledged (retrying would not help).
- Anything else that raises (S3, DynamoDB, SQS, EventBridge unavailable; a malformed message)
  fails only that record; SQS redelivers it and, after the queue's maxReceiveCount, moves it
  to the dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.ingest import wiring
from functions.ingest.domain.service import ChunkingService, ChunkOutcome
from ragline.contracts import DocumentUploaded
from ragline.events import parse_envelope
from ragline.observability import logger as make_logger

logger = make_logger("ingest-worker")

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def make_handler(chunking_service: Callable[[], ChunkingService]) -> Handler:
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> str:
        event = parse_envelope(record.body, DocumentUploaded).detail
        logger.set_correlation_id(event.metadata.correlation_id)
        logger.append_keys(document_id=event.document_id, version=event.version)
        result = chunking_service().process(event)
        log = logger.warning if result.outcome == ChunkOutcome.FAILED else logger.info
        log(
            f"document {result.outcome}",
            extra={"outcome": result.outcome, "chunk_count": result.chunk_count, "reason": result.reason},
        )
        return result.outcome

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler


handler = make_handler(wiring.chunking_service)
