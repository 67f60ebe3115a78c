"""`Idempotency-Key` on POST /v1/documents, with Powertools idempotency over its DynamoDB
persistence layer (the idempotency table, records expired by TTL).

A record is keyed by the caller (tenant and user: one caller's key never replays another's
response) and the key; it stores the hash of the request body and the response. The same key with
the same body replays the stored response; with another body it is `IdempotencyKeyReused`; while
the first request is still running it is `IdempotencyKeyInProgress`. A request that raised stores
nothing, so its retry runs again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.ingest.domain.errors import IdempotencyKeyInProgress, IdempotencyKeyReused

KEY_PREFIX = "ingest-api#create-document"


def _compute(request: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return compute()


class IdempotentRequests:
    def __init__(self, dynamodb_client: Any, table_name: str, *, ttl_s: int) -> None:
        self._config = IdempotencyConfig(
            event_key_jmespath="[caller, key]",
            payload_validation_jmespath="body",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=ttl_s,
        )
        store = DynamoDBPersistenceLayer(
            table_name=table_name, boto3_client=dynamodb_client, key_attr="id", expiry_attr="expiration"
        )
        self._once = idempotent_function(
            data_keyword_argument="request",
            persistence_store=store,
            config=self._config,
            key_prefix=KEY_PREFIX,
        )(_compute)

    def run(
        self,
        *,
        caller: str,
        key: str,
        body: dict[str, Any],
        compute: Callable[[], dict[str, Any]],
        context: LambdaContext | None = None,
    ) -> dict[str, Any]:
        """`compute()`'s JSON-serializable result, computed at most once per (caller, key)."""
        if context is not None:  # an in-progress record expires with the invocation that wrote it
            self._config.register_lambda_context(context)
        try:
            return self._once(request={"caller": caller, "key": key, "body": body}, compute=compute)
        except IdempotencyValidationError as exc:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request body; use a new key"
            ) from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise IdempotencyKeyInProgress(
                "a request with this Idempotency-Key is in progress; retry when it has finished"
            ) from exc
