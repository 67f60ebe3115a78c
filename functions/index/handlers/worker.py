"""index-worker: consumes the index queue (ChunksReady, sent point to point by ingest), embeds the
chunks and writes them to the search index, publishing IndexingStarted first and DocumentIndexed
or DocumentFailed (source ragline.index) at the end. Failures are reported per record (partial
batch response): permanent ones are published and acknowledged, transient ones raise so SQS
redelivers the record (and, after maxReceiveCount, moves it to the dead-letter queue); the last
delivery's failure also publishes DocumentFailed (`retries_exhausted`, `IndexService.give_up`)."""

from __future__ import annotations

from collections.abc import Callable

from functions.index import wiring
from functions.index.domain.service import IndexOutcome, IndexService
from ragline.contracts import ChunksReady
from ragline.messaging import Handler, sqs_handler
from ragline.observability import logger as make_logger
from ragline.topology import TOPOLOGY

logger = make_logger("index-worker")


def make_handler(index_service: Callable[[], IndexService]) -> Handler:
    def handle(event: ChunksReady) -> str:
        logger.append_keys(document_id=event.document_id, version=event.version)
        result = index_service().index(event)
        log = logger.warning if result.outcome == IndexOutcome.FAILED else logger.info
        log(
            f"document {result.outcome}",
            extra={"indexed_count": result.indexed_count, "reason": result.reason},
        )
        return result.outcome

    def exhausted(event: ChunksReady, error: Exception) -> None:
        index_service().give_up(event, error)

    return sqs_handler(
        logger,
        [ChunksReady],
        handle,
        max_receive_count=TOPOLOGY.queue("index").max_receive_count,
        on_exhausted=exhausted,
        prepare=lambda events: index_service().prepared(events),
    )


handler = make_handler(wiring.index_service)
