"""Notify's domain without AWS: where webhooks may go (SSRF), signatures, backoff, and what the
deliverer does with failures (counts, disables once, publishes SubscriptionDisabled)."""

from __future__ import annotations

import ipaddress
import time
from datetime import datetime

import pytest

from functions.notify.domain.addresses import check_url, pick_address, refusal
from functions.notify.domain.delivery import Deliverer, Outcome, backoff_s, email_message
from functions.notify.domain.errors import DeliveryFailed, WebhookUrlRefused
from functions.notify.domain.ports import SubscriptionRecord
from functions.notify.domain.signing import signature_header, verify
from ragline.contracts import (
    DeliveryRequested,
    EventMetadata,
    Subscription,
    SubscriptionDisabled,
    SubscriptionStatus,
    utcnow,
)

REFUSED = {
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "cloud metadata",
    "169.254.10.10": "link-local",
    "fe80::1": "link-local",
    "fd00:ec2::254": "cloud metadata",
    "fc00::5": "private",
    "0.0.0.0": "private",
    "100.64.0.1": "not global",
    "224.0.0.1": "multicast",
    "::ffff:10.0.0.1": "private",
    "::ffff:127.0.0.1": "loopback",
}


@pytest.mark.parametrize(("address", "reason"), REFUSED.items())
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_loopback_is_allowed_only_by_the_test_setting_and_nothing_else_is() -> None:
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
    assert refusal(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) == "private"
    assert refusal(ipaddress.ip_address("169.254.169.254"), allow_loopback=True) == "cloud metadata"


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://[::1]:8443/x",
        "https://169.254.169.254/latest/meta-data",
        "https:///nohost",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(WebhookUrlRefused):
        check_url(url)


def test_a_name_with_any_refused_address_is_refused_whole() -> None:
    public, private = ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.1")
    assert pick_address("h", [public]) == public
    assert pick_address("h", [ipaddress.ip_address("2606:4700:4700::1111"), public]) == public  # IPv4 first
    with pytest.raises(WebhookUrlRefused, match="private"):
        pick_address("h", [public, private])
    with pytest.raises(WebhookUrlRefused, match="does not resolve"):
        pick_address("h", [])


def test_a_signature_verifies_and_any_change_breaks_it() -> None:
    now = int(time.time())
    body = b'{"detail-type":"DocumentIndexed"}'
    header = signature_header("whsec_k", now, body)
    assert verify("whsec_k", header, body, now=now)
    assert not verify("whsec_other", header, body, now=now)
    assert not verify("whsec_k", header, body + b" ", now=now)
    forged_time = header.replace(f"t={now}", f"t={now + 1}")
    assert not verify("whsec_k", forged_time, body, now=now)
    assert not verify("whsec_k", header, body, now=now + 301)  # too old: a replay
    assert not verify("whsec_k", "garbage", body, now=now)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, 30, 200) for n in range(1, 6)] == [30, 60, 120, 200, 200]


# --------------------------------------------------------------------------------------------
# The deliverer over in-memory parts
# --------------------------------------------------------------------------------------------


class MemorySubscriptions:
    def __init__(self, *records: SubscriptionRecord) -> None:
        self.records = {r.subscription_id: r for r in records}
        self.failures: dict[str, int] = {}

    def get(self, subscription_id: str) -> SubscriptionRecord | None:
        return self.records.get(subscription_id)

    def record_success(self, subscription_id: str, now: datetime) -> None:
        self.failures[subscription_id] = 0

    def record_failure(self, subscription_id: str, error: str, now: datetime) -> int:
        self.failures[subscription_id] = self.failures.get(subscription_id, 0) + 1
        return self.failures[subscription_id]

    def disable(self, subscription_id: str, now: datetime) -> bool:
        record = self.records[subscription_id]
        if record.view.status != SubscriptionStatus.ACTIVE:
            return False
        view = record.view.model_copy(update={"status": SubscriptionStatus.DISABLED})
        self.records[subscription_id] = SubscriptionRecord(
            view=view, tenant=record.tenant, owner=record.owner
        )
        return True


class FailingReceiver:
    def __init__(self) -> None:
        self.posts: list[dict[str, str]] = []

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        self.posts.append(headers)
        raise DeliveryFailed("the receiver answered 503")


class Published(list):
    def publish(self, detail) -> None:
        self.append(detail)


def subscription(**overrides) -> SubscriptionRecord:
    now = utcnow()
    view = Subscription(
        subscription_id="s1",
        url="https://hooks.example.com/x",
        email=None,
        event_types=["DocumentIndexed"],
        collection=None,
        description="",
        status=SubscriptionStatus.ACTIVE,
        consecutive_failures=0,
        failed_attempts=0,
        last_error=None,
        created_at=now,
        updated_at=now,
    )
    return SubscriptionRecord(view=view.model_copy(update=overrides), tenant="acme", owner="alice")


def request() -> DeliveryRequested:
    event = {"id": "e1", "detail-type": "DocumentIndexed", "detail": {"document_id": "d"}}
    return DeliveryRequested(
        metadata=EventMetadata(correlation_id="c", idempotency_key="k"),
        delivery_id="d1",
        subscription_id="s1",
        event=event,
    )


class Secrets:
    def get(self, subscription_id: str) -> str | None:
        return "whsec_k"


def test_failures_retry_with_backoff_then_disable_once_and_say_so() -> None:
    subscriptions, published, receiver = MemorySubscriptions(subscription()), Published(), FailingReceiver()
    deliverer = Deliverer(
        subscriptions,
        Secrets(),
        receiver,
        None,
        published,
        backoff_base_s=10,
        backoff_max_s=100,
        disable_after=3,
    )
    results = [deliverer.deliver(request(), attempt=n, last=False) for n in (1, 2)]
    assert [(r.outcome, r.retry_after_s) for r in results] == [(Outcome.RETRY, 10), (Outcome.RETRY, 20)]

    third = deliverer.deliver(request(), attempt=3, last=False)
    assert third.outcome == Outcome.DROPPED
    assert subscriptions.records["s1"].view.status == SubscriptionStatus.DISABLED
    assert [type(e) for e in published] == [SubscriptionDisabled]
    assert (published[0].subscription_id, published[0].consecutive_failures) == ("s1", 3)
    assert published[0].metadata.tenant == "acme"

    # disabled: nothing more is posted, and nothing more is said
    assert deliverer.deliver(request(), attempt=4, last=False).outcome == Outcome.DROPPED
    assert len(receiver.posts) == 3 and len(published) == 1


def test_the_last_try_is_exhausted_not_retried() -> None:
    deliverer = Deliverer(
        MemorySubscriptions(subscription()),
        Secrets(),
        FailingReceiver(),
        None,
        Published(),
        backoff_base_s=10,
        backoff_max_s=100,
        disable_after=50,
    )
    assert deliverer.deliver(request(), attempt=8, last=True).outcome == Outcome.EXHAUSTED


def test_the_email_of_a_failed_operation_names_it_and_why() -> None:
    event = {
        "detail-type": "OperationCompleted",
        "detail": {
            "document_id": "doc1",
            "operation_id": "op1",
            "kind": "delete",
            "status": "failed",
            "error": {"code": "DeleteFailed", "message": "bucket unavailable"},
        },
    }
    subject, text = email_message(event)
    assert "doc1" in subject and "failed" in subject
    assert "op1" in text and "DeleteFailed: bucket unavailable" in text
