"""The subscriptions API's use cases: a subscription belongs to the principal (tenant and user) that
created it; nobody else sees or deletes it (they get 404, as for something that does not exist)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ragline.contracts import (
    CreatedSubscription,
    CreateSubscriptionRequest,
    Principal,
    Subscription,
    SubscriptionStatus,
    new_id,
    utcnow,
)

from .errors import SubscriptionNotFound
from .ports import AddressResolver, SecretStore, SubscriptionRecord, SubscriptionRepository
from .signing import new_secret


class SubscriptionService:
    def __init__(
        self,
        subscriptions: SubscriptionRepository,
        secrets: SecretStore,
        resolver: AddressResolver,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._subscriptions = subscriptions
        self._secrets = secrets
        self._resolver = resolver
        self._clock = clock

    def create(self, principal: Principal, request: CreateSubscriptionRequest) -> CreatedSubscription:
        if request.url is not None:
            self._resolver.check(request.url)
        now = self._clock()
        view = Subscription(
            subscription_id=new_id(),
            url=request.url,
            email=request.email,
            event_types=sorted({t.value for t in request.event_types}),
            collection=request.collection,
            description=request.description,
            status=SubscriptionStatus.ACTIVE,
            consecutive_failures=0,
            failed_attempts=0,
            last_error=None,
            created_at=now,
            updated_at=now,
        )
        secret = None
        if request.url is not None:
            # The key first: a subscription is never listed without the key its deliveries need.
            secret = new_secret()
            self._secrets.put(view.subscription_id, secret)
        self._subscriptions.put(
            SubscriptionRecord(view=view, tenant=principal.tenant, owner=principal.user_id)
        )
        return CreatedSubscription(**view.model_dump(), secret=secret)

    def list(self, principal: Principal) -> list[Subscription]:
        records = self._subscriptions.list_by_owner(principal.tenant, principal.user_id)
        return [r.view for r in sorted(records, key=lambda r: r.view.created_at)]

    def get(self, principal: Principal, subscription_id: str) -> Subscription:
        return self._owned(principal, subscription_id).view

    def delete(self, principal: Principal, subscription_id: str) -> None:
        self._owned(principal, subscription_id)
        self._subscriptions.delete(subscription_id)
        self._secrets.delete(subscription_id)

    def _owned(self, principal: Principal, subscription_id: str) -> SubscriptionRecord:
        record = self._subscriptions.get(subscription_id)
        if record is None or (record.tenant, record.owner) != (principal.tenant, principal.user_id):
            raise SubscriptionNotFound(f"no subscription {subscription_id}")
        return record
