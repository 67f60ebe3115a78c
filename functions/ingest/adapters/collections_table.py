"""The collections table (DynamoDB): one item per (tenant, collection), keyed `tenant_scope`
(`tenant#<tenant>`, `tenant#` without one) and `name`; other attributes are the `Collection` fields.
A tenant's collections are one partition: listing them is one Query."""

from __future__ import annotations

import json
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from functions.ingest.domain.errors import CollectionAlreadyExists
from ragline.contracts import Collection

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def _scope(tenant: str | None) -> str:
    return f"tenant#{tenant or ''}"


def _from_item(item: dict[str, Any]) -> Collection:
    data = {
        key: _DESERIALIZER.deserialize(value) for key, value in item.items() if key in Collection.model_fields
    }
    return Collection.model_validate({k: int(v) if k.startswith("chunk_") else v for k, v in data.items()})


class DynamoCollectionRepository:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._client = dynamodb_client
        self._table = table_name

    def create(self, tenant: str | None, collection: Collection) -> None:
        data = json.loads(collection.model_dump_json()) | {"tenant_scope": _scope(tenant)}
        try:
            self._client.put_item(
                TableName=self._table,
                Item={key: _SERIALIZER.serialize(value) for key, value in data.items()},
                ConditionExpression="attribute_not_exists(#name)",
                ExpressionAttributeNames={"#name": "name"},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise CollectionAlreadyExists(collection.name) from exc
            raise

    def get(self, tenant: str | None, name: str) -> Collection | None:
        item = self._client.get_item(
            TableName=self._table,
            Key={"tenant_scope": {"S": _scope(tenant)}, "name": {"S": name}},
            ConsistentRead=True,
        ).get("Item")
        return _from_item(item) if item else None

    def list(self, tenant: str | None) -> list[Collection]:
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="tenant_scope = :scope",
            ExpressionAttributeValues={":scope": {"S": _scope(tenant)}},
        )
        return [_from_item(item) for page in pages for item in page.get("Items", [])]
