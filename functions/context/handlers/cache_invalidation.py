"""context-cache-invalidation: consumes the answer-cache queue, where the bus rules deliver what
changes a collection's answers (DocumentIndexed from ragline.index; DocumentUpdated and
DocumentDeleted from ragline.ingest), and starts a new generation of that collection's cached
answers and of the all-collections ones. A duplicate or late event only adds a generation: some
answers are generated again, none is wrong."""

from __future__ import annotations

from collections.abc import Callable

from functions.context import wiring
from functions.context.domain.ports import AnswerCache
from ragline.contracts import DocumentDeleted, DocumentIndexed, DocumentUpdated
from ragline.messaging import Handler, sqs_handler
from ragline.observability import logger as make_logger

logger = make_logger("context-cache-invalidation")


def make_handler(answer_cache: Callable[[], AnswerCache | None]) -> Handler:
    def handle(event: DocumentIndexed | DocumentUpdated | DocumentDeleted) -> None:
        logger.append_keys(document_id=event.document_id, version=event.version)
        cache = answer_cache()
        if cache is None:  # the cache is off: nothing was stored, nothing to invalidate
            logger.info("answer cache off; event ignored", extra={"detail_type": event.DETAIL_TYPE})
            return
        cache.invalidate(event.collection)
        logger.info(
            "answer cache invalidated",
            extra={"collection": event.collection, "detail_type": event.DETAIL_TYPE},
        )

    return sqs_handler(logger, [DocumentIndexed, DocumentUpdated, DocumentDeleted], handle)


handler = make_handler(wiring.answer_cache)
