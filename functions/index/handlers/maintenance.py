"""index-maintenance: the index's side of reconciliation (docs/saga.md, "Reconciliation"), invoked
directly by ingest's reconciler with one `IndexMaintenanceCommand`: list what the index holds per
document version, delete a version's (or a document's) chunks, or restore a version from its
chunk file. The index stays the only writer of the index; ingest decides what should be in it.

A permanent failure (the chunk file is gone or invalid) answers an ErrorResponse with its code;
anything else raises and reaches the caller as the invocation's FunctionError (retry later)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from functions.index import wiring
from functions.index.domain.errors import IndexingFailed
from functions.index.domain.service import ChunkFile, IndexService
from ragline.contracts import (
    DeleteVectorsCommand,
    IndexedVersion,
    IndexMaintenanceCommand,
    InventoryCommand,
    InventoryPage,
    MaintenanceResult,
    RestoreVersionCommand,
)
from ragline.http import error_body, validation_details
from ragline.observability import logger as make_logger

logger = make_logger("index-maintenance")
_COMMAND: TypeAdapter[Any] = TypeAdapter(IndexMaintenanceCommand)


def run(service: IndexService, command: Any) -> dict[str, Any]:
    if isinstance(command, InventoryCommand):
        counts = service.inventory(command.after, command.size)
        page = InventoryPage(
            versions=[IndexedVersion.model_validate(c, from_attributes=True) for c in counts]
        )
        return page.model_dump(mode="json")
    if isinstance(command, DeleteVectorsCommand):
        if command.version is None:
            chunks = service.delete_document(command.document_id)
        else:
            chunks = service.delete_version(command.document_id, command.version)
        logger.info(
            "vectors deleted",
            extra={"document_id": command.document_id, "version": command.version, "deleted": chunks},
        )
        return MaintenanceResult(chunks=chunks).model_dump(mode="json")
    assert isinstance(command, RestoreVersionCommand)
    source = ChunkFile(command.document_id, command.version, command.chunks_key, command.chunk_count)
    chunks = service.restore_version(source)
    logger.info(
        "version restored",
        extra={"document_id": command.document_id, "version": command.version, "chunks": chunks},
    )
    return MaintenanceResult(chunks=chunks).model_dump(mode="json")


def make_handler(
    index_service: Callable[[], IndexService],
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            command = _COMMAND.validate_python(event)
        except ValidationError as exc:
            return error_body(
                "validation_error", "The maintenance command is invalid", validation_details(exc.errors())
            )
        try:
            return run(index_service(), command)
        except IndexingFailed as exc:
            logger.warning("maintenance command failed", extra={"code": exc.code, "error": str(exc)})
            return error_body(exc.code, str(exc))

    return handle


_handle = make_handler(wiring.index_service)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handle(event, context)
