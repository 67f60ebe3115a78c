"""ingest-worker: consumes the ingest queue (DocumentUploaded, delivered by the bus rule) and
chunks each document. One SQS record = one document; failures are reported per record
(partial batch response), so one bad document never makes SQS redeliver the others.

- A document that cannot be parsed is a permanent failure: DocumentFailed is published, the
  record is marked failed, and the message is acknowledged (retrying would not help).
- Anything else that raises (S3, DynamoDB, SQS, EventBridge unavailable; a malformed message)
  fails only that record; SQS redelivers it and, after the queue's maxReceiveCount, moves it
  to the dead-letter queue. On the last delivery the document is first marked failed
  (`retries_exhausted`) and DocumentFailed is published (`ChunkingService.give_up`).
"""

from __future__ import annotations

from collections.abc import Callable

from functions.ingest import wiring
from functions.ingest.domain.pipeline import ChunkingService, ChunkOutcome
from ragline.contracts import DocumentUploaded
from ragline.messaging import Handler, sqs_handler
from ragline.observability import logger as make_logger
from ragline.topology import TOPOLOGY

logger = make_logger("ingest-worker")


def make_handler(chunking_service: Callable[[], ChunkingService]) -> Handler:
    def handle(event: DocumentUploaded) -> str:
        logger.append_keys(document_id=event.document_id, version=event.version)
        result = chunking_service().process(event)
        log = logger.warning if result.outcome == ChunkOutcome.FAILED else logger.info
        log(
            f"document {result.outcome}",
            extra={"outcome": result.outcome, "chunk_count": result.chunk_count, "reason": result.reason},
        )
        return result.outcome

    def exhausted(event: DocumentUploaded, error: Exception) -> None:
        if chunking_service().give_up(event, error):
            logger.warning("document failed: retries exhausted", extra={"error": str(error)})

    return sqs_handler(
        logger,
        [DocumentUploaded],
        handle,
        max_receive_count=TOPOLOGY.queue("ingest").max_receive_count,
        on_exhausted=exhausted,
    )


handler = make_handler(wiring.chunking_service)
