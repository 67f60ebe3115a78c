"""ingest-saga: ingest's steps of the document-delete and document-update state machines
(docs/saga.md), one function invoked as `{"step": <state name>, "saga": <execution state>}`.

Thin: each step is one `DeleteSaga` or `UpdateSaga` method; the steps both machines name (Complete,
FailOperation) go to the saga of the execution's `kind` (an update's input says `"kind": "update"`). AWS and EventBridge failures are raised as
`TransientError` (the state machine retries them with backoff); domain errors keep their names
(`DocumentBusy` is retried by MarkDeleting, the rest are caught and end the operation failed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.ingest import wiring
from functions.ingest.adapters.blob_store import DeleteFailed
from functions.ingest.domain.deletion import DeleteSaga
from functions.ingest.domain.updates import UpdateSaga
from ragline.contracts import OperationKind
from ragline.events import PublishError
from ragline.observability import logger as make_logger
from ragline.saga import (
    CHECK_SWITCHED,
    COMPLETE,
    DELETE_OBJECTS,
    DELETE_RECORD,
    FAIL_OPERATION,
    INVALIDATE_CACHE,
    MARK_DELETING,
    PARSE_AND_CHUNK,
    PUBLISH_DELETED,
    RELEASE_VERSION,
    RESERVE_VERSION,
    SWITCH_VERSION,
    UNMARK_DELETING,
    Step,
    UnknownStep,
    step_handler,
)

logger = make_logger("ingest-saga")
TRANSIENT = (ClientError, BotoCoreError, PublishError, DeleteFailed, ConnectionError, TimeoutError)


def make_handler(
    saga: Callable[[], DeleteSaga], update: Callable[[], UpdateSaga] | None = None
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    def step(name: str) -> Callable[[], Step]:
        return lambda: getattr(saga(), name)

    def updating(name: str) -> Callable[[], Step]:
        def build() -> Step:
            if update is None:
                raise UnknownStep(f"no update saga here for {name}")
            return getattr(update(), name)

        return build

    def by_kind(name: str) -> Callable[[], Step]:
        def run(state: dict[str, Any]) -> dict[str, Any] | None:
            if state.get("kind") == OperationKind.UPDATE.value:
                return updating(name)()(state)
            return step(name)()(state)

        return lambda: run

    return step_handler(
        {
            MARK_DELETING: step("mark_deleting"),
            DELETE_OBJECTS: step("delete_objects"),
            DELETE_RECORD: step("delete_record"),
            PUBLISH_DELETED: step("publish_deleted"),
            COMPLETE: by_kind("complete"),
            UNMARK_DELETING: step("unmark_deleting"),
            FAIL_OPERATION: by_kind("fail"),
            RESERVE_VERSION: updating("reserve_version"),
            PARSE_AND_CHUNK: updating("parse_and_chunk"),
            SWITCH_VERSION: updating("switch_version"),
            CHECK_SWITCHED: updating("check_switched"),
            INVALIDATE_CACHE: updating("invalidate_cache"),
            RELEASE_VERSION: updating("release_version"),
        },
        is_transient=lambda exc: isinstance(exc, TRANSIENT),
        log=lambda message, extra: logger.warning(message, extra=extra),
    )


_handle = make_handler(wiring.delete_saga, wiring.update_saga)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handle(event, context)
