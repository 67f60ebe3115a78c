"""index-saga: the index's steps of the document-delete and document-update state machines
(docs/saga.md), invoked as `{"step": <state name>, "saga": <execution state>}`.

Delete: DeleteVectors (the saga's pivot) deletes every version's chunks; Reindex (its compensation)
writes the document's active version again from its chunk file and activates it. Update (the plan
is the state's `update`: `previous`, `version`): IndexVersion writes the new version inactive from
the chunk file ParseAndChunk wrote (`chunks`), Activate makes it searchable and then hides the
previous one, DeleteOldVectors deletes the previous version once readers find the new one;
RemoveNewVersion (the compensation) makes the previous version searchable again, then hides and
deletes the new one. `IndexingFailed` keeps its
name (permanent); anything else is a `TransientError` (retried), as IndexService documents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.index import wiring
from functions.index.domain.errors import IndexingFailed
from functions.index.domain.service import ChunkFile, IndexService
from ragline.contracts import utcnow
from ragline.observability import logger as make_logger
from ragline.saga import (
    ACTIVATE,
    DELETE_OLD_VECTORS,
    DELETE_VECTORS,
    INDEX_VERSION,
    REINDEX,
    REMOVE_NEW_VERSION,
    Step,
    step_handler,
)

logger = make_logger("index-saga")


def make_handler(
    index_service: Callable[[], IndexService],
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    def delete_vectors(state: dict[str, Any]) -> dict[str, Any]:
        deleted = index_service().delete_document(state["document_id"])
        logger.info("vectors deleted", extra={"document_id": state["document_id"], "deleted": deleted})
        return {"deleted": deleted, "completed_at": utcnow().isoformat()}

    def reindex(state: dict[str, Any]) -> dict[str, Any]:
        noted = state.get("document") or {}
        if not noted.get("indexed"):  # it had no searchable version before the delete began
            return {"reindexed": 0}
        source = ChunkFile(state["document_id"], noted["version"], noted["chunks_key"], noted["chunk_count"])
        return {"reindexed": index_service().restore_version(source)}

    def index_new_version(state: dict[str, Any]) -> dict[str, Any]:
        plan, chunks = state["update"], state["chunks"]
        source = ChunkFile(state["document_id"], plan["version"], chunks["chunks_key"], chunks["chunk_count"])
        written = index_service().index_version(source)
        return {"written": written, "completed_at": utcnow().isoformat()}

    def activate(state: dict[str, Any]) -> dict[str, Any]:
        """The new version searchable, then the previous one hidden (never neither; both for a
        moment, which retrieve resolves to the newest): old vectors a failed DeleteOldVectors
        leaves behind are then invisible orphans, never a way around the new allowed groups."""
        plan, service = state["update"], index_service()
        active = service.activate(state["document_id"], plan["version"])
        service.deactivate(state["document_id"], plan["previous"])
        return {"active": active, "completed_at": utcnow().isoformat()}

    def delete_old_vectors(state: dict[str, Any]) -> dict[str, Any]:
        plan = state["update"]
        deleted = index_service().delete_version(
            state["document_id"], plan["previous"], replaced_by=plan["version"]
        )
        return {"deleted": deleted, "completed_at": utcnow().isoformat()}

    def remove_new_version(state: dict[str, Any]) -> dict[str, Any]:
        plan = state.get("update")
        if not plan:  # ReserveVersion failed: nothing was indexed
            return {"removed": 0}
        service = index_service()
        service.activate(state["document_id"], plan["previous"])  # no-op unless Activate ran
        service.deactivate(state["document_id"], plan["version"])
        removed = service.delete_version(state["document_id"], plan["version"], replaced_by=plan["previous"])
        return {"removed": removed}

    def lazily(step: Step) -> Callable[[], Step]:
        return lambda: step

    return step_handler(
        {
            DELETE_VECTORS: lazily(delete_vectors),
            REINDEX: lazily(reindex),
            INDEX_VERSION: lazily(index_new_version),
            ACTIVATE: lazily(activate),
            DELETE_OLD_VECTORS: lazily(delete_old_vectors),
            REMOVE_NEW_VERSION: lazily(remove_new_version),
        },
        is_transient=lambda exc: not isinstance(exc, IndexingFailed),
        log=lambda message, extra: logger.warning(message, extra=extra),
    )


_handle = make_handler(wiring.index_service)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handle(event, context)
