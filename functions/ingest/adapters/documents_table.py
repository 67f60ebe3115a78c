"""The documents table (DynamoDB): one item per document, keyed by `id`; attributes are the
`Document` fields (datetimes as ISO 8601 strings, absent where None)."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from functions.ingest.domain.errors import DocumentAlreadyExists
from ragline.contracts import Document, DocumentStatus

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; the model wants int or float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_item(document: Document) -> dict[str, Any]:
    data = json.loads(document.model_dump_json(exclude_none=True), parse_float=Decimal)
    return {key: _SERIALIZER.serialize(value) for key, value in data.items()}


def from_item(item: dict[str, Any]) -> Document:
    return Document.model_validate(
        {key: _plain(_DESERIALIZER.deserialize(value)) for key, value in item.items()}
    )


class DynamoDocumentRepository:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._client = dynamodb_client
        self._table = table_name

    def create(self, document: Document) -> None:
        try:
            self._client.put_item(
                TableName=self._table,
                Item=to_item(document),
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                raise DocumentAlreadyExists(document.id) from exc
            raise

    def get(self, document_id: str) -> Document | None:
        response = self._client.get_item(
            TableName=self._table, Key={"id": {"S": document_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def update_status(
        self,
        document_id: str,
        *,
        version: int,
        expected: Collection[DocumentStatus],
        status: DocumentStatus,
        updated_at: datetime,
        chunk_count: int | None = None,
        indexed_count: int | None = None,
        failure_reason: str | None = None,
    ) -> bool:
        fields: dict[str, Any] = {"status": status.value, "updated_at": updated_at.isoformat()}
        optional = {
            "chunk_count": chunk_count,
            "indexed_count": indexed_count,
            "failure_reason": failure_reason,
        }
        fields.update({name: value for name, value in optional.items() if value is not None})
        names = {f"#{name}": name for name in fields} | {"#version": "version", "#id": "id"}
        values = {f":{name}": _SERIALIZER.serialize(value) for name, value in fields.items()}
        values[":version"] = {"N": str(version)}
        expected_names = []
        for i, state in enumerate(sorted(expected)):
            values[f":expected{i}"] = {"S": state.value}
            expected_names.append(f":expected{i}")
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": document_id}},
                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in fields),
                ConditionExpression=(
                    f"attribute_exists(#id) AND #version = :version AND #status IN ({', '.join(expected_names)})"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True
