"""The conversations table (DynamoDB): one item per conversation, keyed `conversation_id`.

Attributes: `owner_user`, `owner_tenant` ("" without a tenant), `created_at`, `updated_at`,
`expires_at` (ISO 8601), `ttl` (epoch seconds of `expires_at`: the table's TTL attribute),
`turn_count` and `turns` (a list of JSON `ConversationTurn`s).

The whole history is one item so that an append is one conditional UpdateItem (no read-modify-write:
two racing appends both land) and the expiry moves with the last turn. DynamoDB's 400 KB item limit
bounds the history; `max_turns` normally keeps it well below."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from functions.context.domain.errors import ConversationFull, ConversationNotFound
from functions.context.domain.ports import Owner, StoredConversation
from ragline.contracts import ConversationTurn, utcnow

# ttl is a DynamoDB reserved word.
_APPEND = (
    "SET turns = list_append(if_not_exists(turns, :empty), :turn), "
    "turn_count = if_not_exists(turn_count, :zero) + :one, "
    "created_at = if_not_exists(created_at, :now), updated_at = :now, "
    "expires_at = :expires_at, #ttl = :ttl, owner_user = :user, owner_tenant = :tenant"
)
# A conversation past its expiry but not yet removed by TTL (which lags up to 48 h) is gone for its
# owner too: `get` does not return it, so appending to it must not revive it.
_MAY_APPEND = (
    "attribute_not_exists(conversation_id) OR "
    "(owner_user = :user AND owner_tenant = :tenant AND #ttl > :now_s AND turn_count < :max)"
)


def _epoch_s(moment: datetime) -> int:
    return int(moment.timestamp())


def _error_code(exc: ClientError) -> str | None:
    return exc.response.get("Error", {}).get("Code")


def _too_large(exc: ClientError) -> bool:
    # DynamoDB has no error code of its own for the 400 KB item limit: it is a ValidationException
    # ("Item size [to update] has exceeded the maximum allowed size").
    message = exc.response.get("Error", {}).get("Message", "")
    return _error_code(exc) == "ValidationException" and "exceeded the maximum allowed size" in message


class DynamoConversationStore:
    def __init__(self, dynamodb_client: Any, table_name: str, clock: Callable[[], datetime] = utcnow) -> None:
        self._client = dynamodb_client
        self._table = table_name
        self._clock = clock

    def get(self, conversation_id: str) -> StoredConversation | None:
        # Strongly consistent: a follow-up sent right after an answer must see that answer's turn.
        item = self._client.get_item(
            TableName=self._table, Key={"conversation_id": {"S": conversation_id}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        expires_at = datetime.fromisoformat(item["expires_at"]["S"])
        if expires_at <= self._clock():
            return None
        return StoredConversation(
            conversation_id=conversation_id,
            owner=_owner(item),
            created_at=datetime.fromisoformat(item["created_at"]["S"]),
            updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
            expires_at=expires_at,
            turns=[ConversationTurn.model_validate_json(t["S"]) for t in item.get("turns", {}).get("L", [])],
        )

    def append(
        self,
        conversation_id: str,
        owner: Owner,
        turn: ConversationTurn,
        *,
        expires_at: datetime,
        max_turns: int,
    ) -> None:
        now = self._clock()
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"conversation_id": {"S": conversation_id}},
                UpdateExpression=_APPEND,
                ConditionExpression=_MAY_APPEND,
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":empty": {"L": []},
                    ":turn": {"L": [{"S": turn.model_dump_json()}]},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":max": {"N": str(max_turns)},
                    ":now": {"S": now.astimezone(UTC).isoformat()},
                    ":now_s": {"N": str(_epoch_s(now))},
                    ":expires_at": {"S": expires_at.astimezone(UTC).isoformat()},
                    ":ttl": {"N": str(_epoch_s(expires_at))},
                    ":user": {"S": owner.user_id},
                    ":tenant": {"S": owner.tenant or ""},
                },
                # The refused item comes back with the error, so telling why needs no second read.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                raise self._refusal(conversation_id, owner, exc.response.get("Item"), now) from exc
            if _too_large(exc):
                raise ConversationFull(conversation_id) from exc
            raise

    def _refusal(
        self, conversation_id: str, owner: Owner, item: dict[str, Any] | None, now: datetime
    ) -> Exception:
        if item is None:  # an emulator that does not return the item: read it
            item = self._client.get_item(
                TableName=self._table, Key={"conversation_id": {"S": conversation_id}}, ConsistentRead=True
            ).get("Item")
        if item is None or _owner(item) != _owner_of(owner) or int(item["ttl"]["N"]) <= _epoch_s(now):
            return ConversationNotFound(conversation_id)
        return ConversationFull(conversation_id)


def _owner(item: dict[str, Any]) -> Owner:
    return Owner(item["owner_user"]["S"], item["owner_tenant"]["S"] or None)


def _owner_of(owner: Owner) -> Owner:
    """As stored: an empty tenant is no tenant."""
    return Owner(owner.user_id, owner.tenant or None)
