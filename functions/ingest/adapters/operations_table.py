"""The operations table (DynamoDB): one item per operation, keyed by `operation_id`. The `Operation`
fields as JSON attributes, plus who may read it (`tenant`, `requester`), the saga's note about the
document, and `ttl` (epoch seconds) after which DynamoDB removes it."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from functions.ingest.domain.ports import OperationRecord
from ragline.contracts import Operation

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def to_item(record: OperationRecord) -> dict[str, Any]:
    data = json.loads(record.operation.model_dump_json(exclude_none=True), parse_float=Decimal)
    data |= {
        "tenant": record.tenant or "",
        "requester": record.requester,
        "correlation_id": record.correlation_id,
        "document": json.dumps(record.document),
        "ttl": int(record.expires_at.timestamp()),
    }
    return {key: _SERIALIZER.serialize(value) for key, value in data.items()}


def from_item(item: dict[str, Any]) -> OperationRecord:
    data = {key: _DESERIALIZER.deserialize(value) for key, value in item.items()}
    operation = Operation.model_validate(
        json.loads(
            json.dumps({k: v for k, v in data.items() if k in Operation.model_fields}, default=_number)
        )
    )
    return OperationRecord(
        operation=operation,
        tenant=data.get("tenant") or None,
        requester=data["requester"],
        expires_at=datetime.fromtimestamp(int(data["ttl"]), tz=operation.created_at.tzinfo),
        correlation_id=data["correlation_id"],
        document=json.loads(data.get("document") or "{}"),
    )


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)


class DynamoOperationRepository:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._client = dynamodb_client
        self._table = table_name

    def create(self, record: OperationRecord) -> bool:
        try:
            self._client.put_item(
                TableName=self._table,
                Item=to_item(record),
                ConditionExpression="attribute_not_exists(operation_id)",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get(self, operation_id: str) -> OperationRecord | None:
        item = self._client.get_item(
            TableName=self._table, Key={"operation_id": {"S": operation_id}}, ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def save(self, record: OperationRecord) -> None:
        self._client.put_item(TableName=self._table, Item=to_item(record))
