"""The index context's maintenance commands through its own entry point, a direct Lambda invocation
of `index-maintenance` (locally the same boto3 call reaches the Lambda Invoke emulator)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from functions.ingest.domain.ports import RestoreFailed
from ragline.contracts import (
    DeleteVectorsCommand,
    IndexedVersion,
    InventoryCommand,
    InventoryPage,
    MaintenanceResult,
    RestoreVersionCommand,
)


class MaintenanceUnavailable(RuntimeError):
    """The invocation failed (the function raised, or answered an unexpected error): try later."""


class LambdaIndexMaintenance:
    def __init__(self, lambda_client: Any, function_name: str, *, page_size: int = 1000) -> None:
        self._client = lambda_client
        self._function = function_name
        self._page_size = page_size

    def inventory(self) -> Iterator[IndexedVersion]:
        after: tuple[str, int] | None = None
        while True:
            page = InventoryPage.model_validate(
                self._invoke(InventoryCommand(after=after, size=self._page_size))
            )
            yield from page.versions
            if len(page.versions) < self._page_size:
                return
            last = page.versions[-1]
            after = (last.document_id, last.version)

    def delete_vectors(self, document_id: str, version: int | None) -> int:
        body = self._invoke(DeleteVectorsCommand(document_id=document_id, version=version))
        return MaintenanceResult.model_validate(body).chunks

    def restore_version(self, document_id: str, version: int, chunks_key: str, chunk_count: int) -> int:
        command = RestoreVersionCommand(
            document_id=document_id, version=version, chunks_key=chunks_key, chunk_count=chunk_count
        )
        body = self._invoke(command)
        if "error" in body:
            raise RestoreFailed(body["error"].get("code", "restore_failed"), body["error"].get("message", ""))
        return MaintenanceResult.model_validate(body).chunks

    def _invoke(self, command: BaseModel) -> dict[str, Any]:
        response = self._client.invoke(
            FunctionName=self._function, Payload=command.model_dump_json().encode()
        )
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError") or not isinstance(body, dict):
            raise MaintenanceUnavailable(f"{self._function} failed: {body}")
        if "error" in body and not isinstance(command, RestoreVersionCommand):
            raise MaintenanceUnavailable(f"{self._function} refused {command.command}: {body['error']}")
        return body
