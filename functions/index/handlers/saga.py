"""index-saga: the index's steps of the document-delete state machine (docs/saga.md), invoked as
`{"step": <state name>, "saga": <execution state>}`.

DeleteVectors (the saga's pivot) deletes every version's chunks; Reindex (its compensation) writes
the document's active version again from its chunk file and activates it. `IndexingFailed` keeps its
name (permanent); anything else is a `TransientError` (retried), as IndexService documents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.index import wiring
from functions.index.domain.errors import IndexingFailed
from functions.index.domain.service import ChunkFile, IndexService
from ragline.contracts import utcnow
from ragline.observability import logger as make_logger
from ragline.saga import DELETE_VECTORS, REINDEX, Step, step_handler

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
        service = index_service()
        source = ChunkFile(state["document_id"], noted["version"], noted["chunks_key"], noted["chunk_count"])
        service.index_version(source)
        return {"reindexed": service.activate(source.document_id, source.version)}

    def lazily(step: Step) -> Callable[[], Step]:
        return lambda: step

    return step_handler(
        {DELETE_VECTORS: lazily(delete_vectors), REINDEX: lazily(reindex)},
        is_transient=lambda exc: not isinstance(exc, IndexingFailed),
        log=lambda message, extra: logger.warning(message, extra=extra),
    )


_handle = make_handler(wiring.index_service)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handle(event, context)
