"""What notify's domain needs from the outside, and the record it keeps per subscription."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ragline.contracts import DeliveryRequested, EventDetail, Subscription


@dataclass(frozen=True)
class SubscriptionRecord:
    """A subscription as stored: the API's view plus whose it is."""

    view: Subscription
    tenant: str | None
    owner: str

    @property
    def subscription_id(self) -> str:
        return self.view.subscription_id


class SubscriptionRepository(Protocol):
    def put(self, record: SubscriptionRecord) -> None: ...

    def get(self, subscription_id: str) -> SubscriptionRecord | None: ...

    def list_by_owner(self, tenant: str | None, owner: str) -> list[SubscriptionRecord]: ...

    def list_by_tenant(self, tenant: str | None) -> list[SubscriptionRecord]:
        """Every subscription of the tenant (None: those without one), for matching events."""

    def delete(self, subscription_id: str) -> None: ...

    def record_success(self, subscription_id: str, now: datetime) -> None:
        """consecutive_failures back to 0."""

    def record_failure(self, subscription_id: str, error: str, now: datetime) -> int:
        """Counts one failed attempt; returns the consecutive failures now (0: the subscription is gone)."""

    def disable(self, subscription_id: str, now: datetime) -> bool:
        """active → disabled; False when it was not active (another attempt disabled it first)."""


class SecretStore(Protocol):
    def put(self, subscription_id: str, secret: str) -> None: ...

    def get(self, subscription_id: str) -> str | None: ...

    def delete(self, subscription_id: str) -> None: ...


class AddressResolver(Protocol):
    def check(self, url: str) -> None:
        """Raise WebhookUrlRefused unless the URL may receive webhooks now (form and resolved addresses)."""


class DeliveryQueue(Protocol):
    def send(self, request: DeliveryRequested) -> None: ...


class WebhookSender(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """One attempt; raises DeliveryFailed (or WebhookUrlRefused) unless the receiver answered 2xx."""


class EmailSender(Protocol):
    def send(self, to: str, subject: str, text: str) -> None:
        """Raises DeliveryFailed when the mail service refuses it."""


class EventPublisher(Protocol):
    def publish(self, detail: EventDetail) -> None: ...
