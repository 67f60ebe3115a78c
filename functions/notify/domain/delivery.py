"""From a published event to webhooks and emails.

Fan-out: an event from the bus becomes one DeliveryRequested per matching subscription (same tenant,
a chosen event type, the collection if it names one, active). Its delivery id is derived from the
event's id and the subscription, so a repeated fan-out repeats the id and receivers drop the copy.

Delivery: one attempt per receive. A failure counts against the subscription and the message comes
back after an exponential backoff (the handler sets its visibility); the last try's failure leaves it
to the dead-letter queue. After `disable_after` consecutive failures the subscription is disabled, once,
and SubscriptionDisabled says so; its queued deliveries are then dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from ragline.contracts import (
    DeliveryRequested,
    EventMetadata,
    SubscriptionDisabled,
    SubscriptionStatus,
    utcnow,
)

from .errors import DeliveryFailed, WebhookUrlRefused
from .ports import (
    DeliveryQueue,
    EmailSender,
    EventPublisher,
    SecretStore,
    SubscriptionRecord,
    SubscriptionRepository,
    WebhookSender,
)
from .signing import DELIVERY_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, signature_header


def delivery_id(event_id: str, subscription_id: str) -> str:
    return hashlib.sha256(f"{event_id}:{subscription_id}".encode()).hexdigest()[:32]


def matches(record: SubscriptionRecord, detail_type: str, tenant: str | None, collection: str | None) -> bool:
    view = record.view
    return (
        view.status == SubscriptionStatus.ACTIVE
        and record.tenant == tenant
        and detail_type in view.event_types
        and (view.collection is None or view.collection == collection)
    )


class Fanout:
    def __init__(self, subscriptions: SubscriptionRepository, queue: DeliveryQueue) -> None:
        self._subscriptions = subscriptions
        self._queue = queue

    def fan_out(self, envelope: dict[str, Any], metadata: EventMetadata) -> int:
        """`envelope`: the event as EventBridge delivered it (validated by the caller); returns how many
        deliveries were queued."""
        detail_type = envelope["detail-type"]
        collection = envelope["detail"].get("collection")
        queued = 0
        for record in self._subscriptions.list_by_tenant(metadata.tenant):
            if not matches(record, detail_type, metadata.tenant, collection):
                continue
            delivery = delivery_id(envelope["id"], record.subscription_id)
            self._queue.send(
                DeliveryRequested(
                    metadata=EventMetadata(
                        correlation_id=metadata.correlation_id,
                        idempotency_key=delivery,
                        tenant=metadata.tenant,
                    ),
                    delivery_id=delivery,
                    subscription_id=record.subscription_id,
                    event=envelope,
                )
            )
            queued += 1
        return queued


class Outcome(Enum):
    DELIVERED = "delivered"
    DROPPED = "dropped"  # the subscription is gone or disabled: nothing to retry
    RETRY = "retry"  # try again after `retry_after_s`
    EXHAUSTED = "exhausted"  # the last try failed: the message goes to the dead-letter queue


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    retry_after_s: int = 0
    error: str | None = None


def backoff_s(attempt: int, base_s: int, max_s: int) -> int:
    """Before try `attempt + 1`: base, 2 x base, 4 x base, ... at most max_s."""
    return min(max_s, base_s * 2 ** max(0, attempt - 1))


def email_message(event: dict[str, Any]) -> tuple[str, str]:
    """Subject and text of the email for a DocumentFailed or OperationCompleted."""
    detail = event["detail"]
    document = detail.get("document_id", "?")
    if event["detail-type"] == "OperationCompleted":
        subject = f"Ragline: {detail['kind']} of document {document} {detail['status']}"
        error = detail.get("error") or {}
        reason = f"\nReason: {error.get('code')}: {error.get('message')}" if error else ""
        text = f"The {detail['kind']} operation {detail['operation_id']} {detail['status']}.{reason}"
    else:
        subject = f"Ragline: document {document} failed"
        text = f"Document {document} version {detail.get('version')} failed: {detail.get('code')}: {detail.get('reason')}"
    return subject, text + "\n\n" + json.dumps(event, indent=2)


class Deliverer:
    def __init__(
        self,
        subscriptions: SubscriptionRepository,
        secrets: SecretStore,
        webhooks: WebhookSender,
        emails: EmailSender,
        publisher: EventPublisher,
        *,
        backoff_base_s: int,
        backoff_max_s: int,
        disable_after: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._subscriptions = subscriptions
        self._secrets = secrets
        self._webhooks = webhooks
        self._emails = emails
        self._publisher = publisher
        self._backoff = (backoff_base_s, backoff_max_s)
        self._disable_after = disable_after
        self._clock = clock

    def deliver(self, request: DeliveryRequested, *, attempt: int, last: bool) -> Result:
        record = self._subscriptions.get(request.subscription_id)
        if record is None or record.view.status != SubscriptionStatus.ACTIVE:
            return Result(Outcome.DROPPED)
        try:
            self._attempt(record, request)
        except (DeliveryFailed, WebhookUrlRefused) as exc:
            return self._failed(record, str(exc), attempt=attempt, last=last)
        self._subscriptions.record_success(record.subscription_id, self._clock())
        return Result(Outcome.DELIVERED)

    def _attempt(self, record: SubscriptionRecord, request: DeliveryRequested) -> None:
        view = record.view
        if view.email is not None:
            self._emails.send(view.email, *email_message(request.event))
            return
        secret = self._secrets.get(record.subscription_id)
        if secret is None or view.url is None:
            raise DeliveryFailed("the subscription has no signing key")
        # Compact and sent exactly as signed: receivers verify the bytes they get.
        body = json.dumps(request.event, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(self._clock().timestamp())
        self._webhooks.post(
            view.url,
            body,
            {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature_header(secret, timestamp, body),
                DELIVERY_HEADER: request.delivery_id,
                EVENT_TYPE_HEADER: request.event["detail-type"],
            },
        )

    def _failed(self, record: SubscriptionRecord, error: str, *, attempt: int, last: bool) -> Result:
        now = self._clock()
        failures = self._subscriptions.record_failure(record.subscription_id, error, now)
        if failures >= self._disable_after:
            # Said before done: a failed publish is retried with the message, and a second
            # SubscriptionDisabled (a race, a retry) has the same idempotency key.
            self._publisher.publish(
                SubscriptionDisabled(
                    metadata=EventMetadata(
                        correlation_id=record.subscription_id,
                        idempotency_key=f"subscription:{record.subscription_id}:disabled",
                        tenant=record.tenant,
                    ),
                    subscription_id=record.subscription_id,
                    owner=record.owner,
                    consecutive_failures=failures,
                    last_error=error,
                )
            )
            self._subscriptions.disable(record.subscription_id, now)
            return Result(Outcome.DROPPED, error=error)
        if last:
            return Result(Outcome.EXHAUSTED, error=error)
        return Result(Outcome.RETRY, retry_after_s=backoff_s(attempt, *self._backoff), error=error)
