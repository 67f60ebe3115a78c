"""ingest-saga: ingest's steps of the document-delete state machine (docs/saga.md), one function
invoked as `{"step": <state name>, "saga": <execution state>}`.

Thin: each step is one `DeleteSaga` method. AWS and EventBridge failures are raised as
`TransientError` (the state machine retries them with backoff); domain errors keep their names
(`DocumentBusy` is retried by MarkDeleting, the rest are caught and end the operation failed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.ingest import wiring
from functions.ingest.adapters.blob_store import DeleteFailed
from functions.ingest.domain.deletion import DeleteSaga
from ragline.events import PublishError
from ragline.observability import logger as make_logger
from ragline.saga import (
    COMPLETE,
    DELETE_OBJECTS,
    DELETE_RECORD,
    FAIL_OPERATION,
    MARK_DELETING,
    PUBLISH_DELETED,
    UNMARK_DELETING,
    Step,
    step_handler,
)

logger = make_logger("ingest-saga")
TRANSIENT = (ClientError, BotoCoreError, PublishError, DeleteFailed, ConnectionError, TimeoutError)


def make_handler(saga: Callable[[], DeleteSaga]) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    def step(name: str) -> Callable[[], Step]:
        return lambda: getattr(saga(), name)

    return step_handler(
        {
            MARK_DELETING: step("mark_deleting"),
            DELETE_OBJECTS: step("delete_objects"),
            DELETE_RECORD: step("delete_record"),
            PUBLISH_DELETED: step("publish_deleted"),
            COMPLETE: step("complete"),
            UNMARK_DELETING: step("unmark_deleting"),
            FAIL_OPERATION: step("fail"),
        },
        is_transient=lambda exc: isinstance(exc, TRANSIENT),
        log=lambda message, extra: logger.warning(message, extra=extra),
    )


_handle = make_handler(wiring.delete_saga)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handle(event, context)
