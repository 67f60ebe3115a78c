"""The answer cache table (DynamoDB), keyed `pk`. Two kinds of items:

- `generation#<collection>` and `generation#*` (all collections): a counter `n`, bumped by every
  invalidation. They never expire: a counter that vanished would start again at 0 and make the
  entries of generation 0 reachable again.
- `answer#<scope>#<key>`: a cached answer (`answer`, the JSON of a CachedAnswer) and `ttl`, the
  table's TTL attribute. The scope names the generation, so entries of an old generation are never
  read again; TTL removes them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from functions.context.domain.ports import CachedAnswer
from ragline.contracts import utcnow

ALL_COLLECTIONS = "*"  # no collection name can be "*" (see CollectionName)

_ANSWER = TypeAdapter(CachedAnswer)


def _generation_key(collection: str | None) -> dict[str, Any]:
    return {"pk": {"S": f"generation#{collection or ALL_COLLECTIONS}"}}


def _entry_key(scope: str, key: str) -> dict[str, Any]:
    return {"pk": {"S": f"answer#{scope}#{key}"}}


class DynamoAnswerCache:
    def __init__(
        self,
        dynamodb_client: Any,
        table_name: str,
        ttl_s: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"an answer cache needs a positive ttl_s, not {ttl_s} (0 means no cache)")
        self._client = dynamodb_client
        self._table = table_name
        self._ttl_s = ttl_s
        self._clock = clock

    def scope(self, collection: str | None) -> str:
        # Strongly consistent: an invalidation that has returned must be seen by the next request.
        item = self._client.get_item(
            TableName=self._table, Key=_generation_key(collection), ConsistentRead=True
        ).get("Item")
        generation = int(item["n"]["N"]) if item else 0
        return f"{collection or ALL_COLLECTIONS}#{generation}"

    def get(self, scope: str, key: str) -> CachedAnswer | None:
        item = self._client.get_item(TableName=self._table, Key=_entry_key(scope, key)).get("Item")
        # TTL deletes expired items late (up to 48 h): an expired entry is a miss until then.
        if not item or int(item["ttl"]["N"]) <= self._clock().timestamp():
            return None
        return _ANSWER.validate_json(item["answer"]["S"])

    def put(self, scope: str, key: str, answer: CachedAnswer) -> None:
        # Unconditional: two requests that raced to answer the same prompt both hold a valid answer.
        expires = int(self._clock().timestamp()) + self._ttl_s
        self._client.put_item(
            TableName=self._table,
            Item={
                **_entry_key(scope, key),
                "answer": {"S": _ANSWER.dump_json(answer).decode()},
                "ttl": {"N": str(expires)},
            },
        )

    def invalidate(self, collection: str) -> None:
        # Two updates, no transaction: each bump on its own only makes entries unreachable, never
        # serves a wrong one. A failure between them leaves the all-collections scope as it was
        # before the event until its redelivery bumps both (an extra generation costs nothing).
        for generation in (collection, None):
            self._client.update_item(
                TableName=self._table,
                Key=_generation_key(generation),
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
