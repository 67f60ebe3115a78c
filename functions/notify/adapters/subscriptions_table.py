"""The subscriptions and webhook-secrets tables (DynamoDB), both owned by notify.

subscriptions: one item per subscription, the `Subscription` fields as attributes plus `tenant`,
`owner`, and the keys of its indexes (`owner_key` = tenant#user lists an owner's; `tenant_key` finds
a tenant's when an event arrives). Counters change with atomic updates, never read-modify-write.

webhook-secrets: the signing key of each webhook subscription, as issued. HMAC needs the key itself
(a hash of it could not sign), so it is kept as is, in its own table: only the API (put, delete) and
the delivery function (get) are granted it, and nothing that lists subscriptions reads it. Both
tables are encrypted at rest by DynamoDB.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from functions.notify.domain.ports import SubscriptionRecord
from ragline.contracts import Subscription, SubscriptionStatus

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()
NO_TENANT = "-"  # index keys cannot be empty


def owner_key(tenant: str | None, owner: str) -> str:
    return f"{tenant or NO_TENANT}#{owner}"


def to_item(record: SubscriptionRecord) -> dict[str, Any]:
    data = json.loads(record.view.model_dump_json(exclude_none=True), parse_float=Decimal)
    data |= {
        "tenant": record.tenant or "",
        "owner": record.owner,
        "owner_key": owner_key(record.tenant, record.owner),
        "tenant_key": record.tenant or NO_TENANT,
    }
    return {key: _SERIALIZER.serialize(value) for key, value in data.items()}


def from_item(item: dict[str, Any]) -> SubscriptionRecord:
    data = {key: _DESERIALIZER.deserialize(value) for key, value in item.items()}
    fields = {k: v for k, v in data.items() if k in Subscription.model_fields}
    view = Subscription.model_validate(
        {name: None for name in ("url", "email", "collection", "last_error")}
        | json.loads(json.dumps(fields, default=_number))
    )
    return SubscriptionRecord(view=view, tenant=data.get("tenant") or None, owner=data["owner"])


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoSubscriptionRepository:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._client = dynamodb_client
        self._table = table_name

    def _key(self, subscription_id: str) -> dict[str, Any]:
        return {"subscription_id": {"S": subscription_id}}

    def put(self, record: SubscriptionRecord) -> None:
        self._client.put_item(TableName=self._table, Item=to_item(record))

    def get(self, subscription_id: str) -> SubscriptionRecord | None:
        item = self._client.get_item(
            TableName=self._table, Key=self._key(subscription_id), ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def _query(self, index: str, key: str, value: str) -> list[SubscriptionRecord]:
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": key},
            ExpressionAttributeValues={":v": {"S": value}},
        )
        return [from_item(item) for page in pages for item in page.get("Items", [])]

    def list_by_owner(self, tenant: str | None, owner: str) -> list[SubscriptionRecord]:
        return self._query("by-owner", "owner_key", owner_key(tenant, owner))

    def list_by_tenant(self, tenant: str | None) -> list[SubscriptionRecord]:
        return self._query("by-tenant", "tenant_key", tenant or NO_TENANT)

    def delete(self, subscription_id: str) -> None:
        self._client.delete_item(TableName=self._table, Key=self._key(subscription_id))

    def _update(self, subscription_id: str, **kwargs: Any) -> dict[str, Any] | None:
        """update_item on one subscription; None when its condition failed."""
        try:
            return self._client.update_item(TableName=self._table, Key=self._key(subscription_id), **kwargs)
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise

    def record_success(self, subscription_id: str, now: datetime) -> None:
        # a failed condition: already 0, or deleted meanwhile
        self._update(
            subscription_id,
            UpdateExpression="SET consecutive_failures = :zero, updated_at = :now",
            ConditionExpression="attribute_exists(subscription_id) AND consecutive_failures > :zero",
            ExpressionAttributeValues={":zero": {"N": "0"}, ":now": {"S": now.isoformat()}},
        )

    def record_failure(self, subscription_id: str, error: str, now: datetime) -> int:
        response = self._update(
            subscription_id,
            UpdateExpression="ADD consecutive_failures :one, failed_attempts :one "
            "SET last_error = :error, updated_at = :now",
            ConditionExpression="attribute_exists(subscription_id)",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":error": {"S": error[:500]},
                ":now": {"S": now.isoformat()},
            },
            ReturnValues="UPDATED_NEW",
        )
        return 0 if response is None else int(response["Attributes"]["consecutive_failures"]["N"])

    def disable(self, subscription_id: str, now: datetime) -> bool:
        response = self._update(
            subscription_id,
            UpdateExpression="SET #s = :disabled, updated_at = :now",
            ConditionExpression="#s = :active",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":disabled": {"S": SubscriptionStatus.DISABLED.value},
                ":active": {"S": SubscriptionStatus.ACTIVE.value},
                ":now": {"S": now.isoformat()},
            },
        )
        return response is not None


class DynamoSecretStore:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._client = dynamodb_client
        self._table = table_name

    def put(self, subscription_id: str, secret: str) -> None:
        self._client.put_item(
            TableName=self._table,
            Item={"subscription_id": {"S": subscription_id}, "secret": {"S": secret}},
        )

    def get(self, subscription_id: str) -> str | None:
        item = self._client.get_item(
            TableName=self._table, Key={"subscription_id": {"S": subscription_id}}, ConsistentRead=True
        ).get("Item")
        return item["secret"]["S"] if item else None

    def delete(self, subscription_id: str) -> None:
        self._client.delete_item(TableName=self._table, Key={"subscription_id": {"S": subscription_id}})
