"""Notify against moto (tables, queues with their redrive policies and bus rules built from
ragline.topology) and a real HTTP receiver on 127.0.0.1: the subscriptions API, fan-out from the
bus, signed deliveries, retries through SQS visibility, the DLQ, deduplication, disabling, SSRF
refusals and email through (moto's) SES."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from functions.notify import wiring
from functions.notify.adapters.http import AddressPolicy, HttpWebhookSender
from functions.notify.domain.errors import DeliveryFailed, WebhookUrlRefused
from functions.notify.domain.signing import DELIVERY_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, verify
from functions.notify.handlers import api, deliver, fanout
from ragline import aws
from ragline.contracts import (
    DocumentFailed,
    DocumentIndexed,
    EventDetail,
    EventMetadata,
    SubscriptionDisabled,
)
from ragline.events import EventBridgePublisher, parse_envelope
from ragline.settings import Settings
from ragline.topology import TOPOLOGY, dlq_name
from tests.support.event_contracts import validators
from tests.support.webhooks import Receiver, webhook_receiver

from .conftest import OBSERVER_QUEUE, AwsPlatform
from .test_ingest_handlers import rest_event

ALICE = {"sub": "alice", "cognito:groups": "eng", "custom:tenant": "acme"}
BOB = {"sub": "bob", "cognito:groups": "eng", "custom:tenant": "acme"}
EVE = {"sub": "eve", "cognito:groups": "eng", "custom:tenant": "other"}
SENDER = "notify@ragline.example"


@pytest.fixture
def receiver():
    with webhook_receiver() as running:
        yield running


def notify_settings(p: AwsPlatform, **overrides: Any) -> Settings:
    return p.settings.model_copy(
        update={
            "deliveries_queue_url": p.queue_urls["notify-deliveries"],
            "webhook_allow_loopback": True,
            "webhook_backoff_s": 0,
            "notify_email_sender": SENDER,
            **overrides,
        }
    )


class Notify:
    """The three notify handlers over moto, with the settings a test chose."""

    def __init__(self, p: AwsPlatform, lambda_context: Any, **overrides: Any) -> None:
        self.p, self.context = p, lambda_context
        self.settings = notify_settings(p, **overrides)
        self.app = api.create_app(lambda: wiring.build_subscription_service(self.settings))
        self.fanout = fanout.make_handler(lambda: wiring.build_fanout(self.settings))
        deliverer = wiring.build_deliverer(self.settings)
        # ChangeMessageVisibility takes the queue URL made from the record's ARN, as in Lambda.
        self.deliver = deliver.make_handler(lambda: deliverer, lambda: p.sqs)

    def call(self, method: str, path: str, claims=ALICE, body: Any = None) -> tuple[int, Any]:
        subscription_id = path.rsplit("/", 1)[-1] if path.count("/") == 3 else None
        event = rest_event(
            method,
            path,
            body=body,
            claims=claims,
            resource="/v1/subscriptions/{subscription_id}" if subscription_id else path,
            path_parameters={"subscription_id": subscription_id} if subscription_id else None,
        )
        response = self.app.resolve(event, self.context)
        return response["statusCode"], json.loads(response["body"]) if response["body"] else None

    def subscribe(self, claims=ALICE, **body: Any) -> dict[str, Any]:
        status, created = self.call(
            "POST", "/v1/subscriptions", claims, {"event_types": ["DocumentIndexed"], **body}
        )
        assert status == 201, created
        return created

    def publish(self, *details: EventDetail) -> None:
        EventBridgePublisher(self.p.events, self.p.settings.event_bus).publish_many(list(details))

    def run_fanout(self, *, expected: int = 1) -> None:
        messages = self.p.receive("notify-events", expected=expected)
        assert len(messages) == expected
        result = self.fanout(self.p.sqs_event("notify-events", messages), self.context)
        assert result["batchItemFailures"] == []

    def deliver_once(self, *, expected: int = 1) -> dict[str, Any]:
        """One receive of the deliveries queue, handled as the event source mapping would."""
        messages = self.p.receive("notify-deliveries", expected=expected, attempts=1)
        assert len(messages) == expected, messages
        result = self.deliver(self.p.sqs_event("notify-deliveries", messages), self.context)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.p.sqs.delete_message_batch(
                QueueUrl=self.p.queue_urls["notify-deliveries"],
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return result


@pytest.fixture
def notify(aws_platform: AwsPlatform, lambda_context) -> Notify:
    return Notify(aws_platform, lambda_context)


def indexed(
    tenant: str | None = "acme", collection: str = "handbook", document_id: str = "doc1"
) -> DocumentIndexed:
    return DocumentIndexed(
        metadata=EventMetadata(
            correlation_id="corr-1", idempotency_key=f"{document_id}:v1:indexed", tenant=tenant
        ),
        document_id=document_id,
        version=1,
        collection=collection,
        indexed_count=3,
    )


def signed_by(secret: str, received) -> bool:
    return verify(secret, received.headers[SIGNATURE_HEADER.lower()], received.body, now=int(time.time()))


# --------------------------------------------------------------------------------------------
# The subscriptions API
# --------------------------------------------------------------------------------------------


def test_a_subscription_is_its_owners_alone_and_its_secret_is_shown_once(
    notify: Notify, receiver: Receiver
) -> None:
    created = notify.subscribe(url=receiver.url, collection="handbook")
    assert created["secret"].startswith("whsec_") and created["status"] == "active"
    sid = created["subscription_id"]

    status, listing = notify.call("GET", "/v1/subscriptions")
    assert status == 200 and [s["subscription_id"] for s in listing["items"]] == [sid]
    assert "secret" not in listing["items"][0]
    assert notify.call("GET", f"/v1/subscriptions/{sid}")[1]["url"] == receiver.url

    for other in (BOB, EVE):  # same tenant, another user; another tenant
        assert notify.call("GET", "/v1/subscriptions", other)[1]["items"] == []
        assert notify.call("GET", f"/v1/subscriptions/{sid}", other)[0] == 404
        assert notify.call("DELETE", f"/v1/subscriptions/{sid}", other)[0] == 404

    assert notify.call("DELETE", f"/v1/subscriptions/{sid}")[0] == 204
    assert notify.call("GET", f"/v1/subscriptions/{sid}")[0] == 404
    assert notify.call("GET", "/v1/subscriptions")[1]["items"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "http://hooks.example.com/x"}, 422, "webhook_url_refused"),
        ({"url": "https://10.0.0.8/x"}, 422, "webhook_url_refused"),
        ({"url": "https://169.254.169.254/latest/meta-data/"}, 422, "webhook_url_refused"),
        ({"url": "https://localhost/x"}, 422, "webhook_url_refused"),
        ({"url": "https://a.example/x", "email": "a@example.com"}, 422, "validation_error"),
        ({"email": "a@example.com", "event_types": ["DocumentIndexed"]}, 422, "validation_error"),
        ({"url": "https://a.example/x", "event_types": ["ChunksReady"]}, 422, "validation_error"),
        ({"url": "https://a.example/x", "event_types": []}, 422, "validation_error"),
    ],
)
def test_bad_subscriptions_are_refused(aws_platform: AwsPlatform, lambda_context, body, status, code) -> None:
    strict = Notify(aws_platform, lambda_context, webhook_allow_loopback=False)
    answered, error = strict.call(
        "POST", "/v1/subscriptions", ALICE, {"event_types": ["DocumentIndexed"], **body}
    )
    assert (answered, error["error"]["code"]) == (status, code)
    assert strict.call("GET", "/v1/subscriptions")[1]["items"] == []


def test_anonymous_callers_get_401(notify: Notify) -> None:
    assert notify.call("GET", "/v1/subscriptions", None)[0] == 401


# --------------------------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------------------------


def test_an_event_reaches_matching_subscriptions_only_signed_with_their_secret(
    notify: Notify, receiver: Receiver
) -> None:
    wanted = notify.subscribe(url=receiver.url)
    in_collection = notify.subscribe(BOB, url=receiver.url + "?c", collection="handbook")
    notify.subscribe(url=receiver.url + "?other-collection", collection="other")
    notify.subscribe(url=receiver.url + "?other-type", event_types=["DocumentDeleted"])
    notify.subscribe(EVE, url=receiver.url + "?other-tenant")

    sent = indexed()
    notify.publish(sent)
    notify.run_fanout()
    notify.deliver_once(expected=2)

    by_path = {r.path: r for r in receiver.received}
    assert set(by_path) == {"/hooks/ragline", "/hooks/ragline?c"}
    for path, created in (("/hooks/ragline", wanted), ("/hooks/ragline?c", in_collection)):
        received = by_path[path]
        assert signed_by(created["secret"], received)
        assert received.headers[EVENT_TYPE_HEADER.lower()] == "DocumentIndexed"
        envelope = json.loads(received.body)
        assert envelope["detail-type"] == "DocumentIndexed" and envelope["source"] == "ragline.index"
        assert DocumentIndexed.model_validate(envelope["detail"]) == sent
    assert not signed_by(wanted["secret"], by_path["/hooks/ragline?c"])
    ids = {r.headers[DELIVERY_HEADER.lower()] for r in receiver.received}
    assert len(ids) == 2


def test_a_repeated_fanout_repeats_the_delivery_id_for_receivers_to_drop(
    notify: Notify, receiver: Receiver
) -> None:
    notify.subscribe(url=receiver.url)
    notify.publish(indexed())
    messages = notify.p.receive("notify-events")
    for _ in range(2):  # the same message delivered twice (SQS is at least once)
        notify.fanout(notify.p.sqs_event("notify-events", messages), notify.context)
    notify.deliver_once(expected=2)

    ids = [r.headers[DELIVERY_HEADER.lower()] for r in receiver.received]
    assert len(ids) == 2 and ids[0] == ids[1]  # one id: a receiver that dedupes on it processes once


def test_failures_come_back_after_their_backoff_and_success_resets_the_count(
    aws_platform: AwsPlatform, lambda_context, receiver: Receiver
) -> None:
    notify = Notify(aws_platform, lambda_context, webhook_backoff_s=2)
    sid = notify.subscribe(url=receiver.url)["subscription_id"]
    receiver.statuses = [500, 503]
    notify.publish(indexed())
    notify.run_fanout()

    assert notify.deliver_once()["batchItemFailures"]
    assert notify.p.receive("notify-deliveries", attempts=1) == []  # hidden for its backoff (2 s)
    time.sleep(2.2)
    assert notify.deliver_once()["batchItemFailures"]  # second try, now hidden for 4 s
    assert notify.p.receive("notify-deliveries", attempts=1) == []
    time.sleep(4.2)
    assert notify.deliver_once()["batchItemFailures"] == []

    assert [len(receiver.received)] == [3]
    view = notify.call("GET", f"/v1/subscriptions/{sid}")[1]
    assert (view["consecutive_failures"], view["failed_attempts"], view["status"]) == (0, 2, "active")
    assert view["last_error"] == "the receiver answered 503"


def test_the_last_try_leaves_the_delivery_to_the_dead_letter_queue(
    notify: Notify, receiver: Receiver
) -> None:
    notify.subscribe(url=receiver.url)
    receiver.statuses = [503] * 100
    notify.publish(indexed())
    notify.run_fanout()

    tries = TOPOLOGY.queue("notify-deliveries").max_receive_count
    for _ in range(tries):
        assert notify.deliver_once()["batchItemFailures"]
    assert notify.p.receive("notify-deliveries", attempts=2) == []  # the next receive moved it
    dlq = notify.p.sqs.get_queue_url(QueueName=dlq_name("notify-deliveries"))["QueueUrl"]
    dead = notify.p.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert (
        len(dead) == 1 and json.loads(dead[0]["Body"])["detail"]["event"]["detail-type"] == "DocumentIndexed"
    )
    assert len(receiver.received) == tries


def test_sustained_failure_disables_the_subscription_once_and_publishes_it(
    aws_platform: AwsPlatform, lambda_context, receiver: Receiver
) -> None:
    notify = Notify(aws_platform, lambda_context, webhook_disable_after=3)
    sid = notify.subscribe(url=receiver.url)["subscription_id"]
    receiver.statuses = [503] * 100
    notify.publish(indexed(document_id="doc1"), indexed(document_id="doc2"))
    notify.run_fanout(expected=2)

    notify.deliver_once(expected=2)  # failures 1 and 2
    result = notify.deliver_once(expected=2)  # 3 disables; the other is dropped, not retried
    assert result["batchItemFailures"] == []
    assert notify.p.receive("notify-deliveries", attempts=2) == []
    assert len(receiver.received) == 3

    view = notify.call("GET", f"/v1/subscriptions/{sid}")[1]
    assert view["status"] == "disabled" and view["consecutive_failures"] >= 3
    bodies = [json.loads(m["Body"]) for m in notify.p.receive(OBSERVER_QUEUE, expected=5)]
    published = [b for b in bodies if b["detail-type"] == "SubscriptionDisabled"]
    for body in published:  # as published, valid under the committed schema
        validators()[SubscriptionDisabled.DETAIL_TYPE].validate(body)
    disabled = [parse_envelope(b, SubscriptionDisabled) for b in published]
    assert [(e.detail.subscription_id, e.detail.owner, e.detail.metadata.tenant) for e in disabled] == [
        (sid, "alice", "acme")
    ]

    notify.publish(indexed(document_id="doc3"))  # a disabled subscription gets nothing more
    notify.run_fanout(expected=2)  # doc3's event, and SubscriptionDisabled itself (a public event)
    assert notify.p.receive("notify-deliveries", attempts=2) == []


def test_a_redirect_is_not_followed(notify: Notify, receiver: Receiver) -> None:
    notify.subscribe(url=receiver.url)
    receiver.statuses, receiver.location = [302], receiver.url + "/elsewhere"
    notify.publish(indexed())
    notify.run_fanout()
    assert notify.deliver_once()["batchItemFailures"]
    assert [r.path for r in receiver.received] == ["/hooks/ragline"]


def test_email_subscriptions_get_failures_through_ses(notify: Notify) -> None:
    aws.client("ses", notify.settings).verify_email_identity(EmailAddress=SENDER)
    notify.subscribe(email="ops@example.com", event_types=["DocumentFailed"])
    failed = DocumentFailed(
        metadata=EventMetadata(correlation_id="c", idempotency_key="doc9:v1:failed", tenant="acme"),
        document_id="doc9",
        version=1,
        stage="index",
        code="embedding_unavailable",
        reason="the endpoint timed out",
    )
    notify.publish(failed, indexed())
    notify.run_fanout(expected=2)
    assert notify.deliver_once()["batchItemFailures"] == []

    sent = ses_backends[DEFAULT_ACCOUNT_ID][notify.settings.aws_region].sent_messages
    assert [(m.source, m.destinations["ToAddresses"]) for m in sent] == [(SENDER, ["ops@example.com"])]
    assert "doc9" in sent[0].subject and "embedding_unavailable" in sent[0].body


# --------------------------------------------------------------------------------------------
# SSRF: checked after resolution, connected to what was checked
# --------------------------------------------------------------------------------------------


def resolving_to(address: str):
    return lambda host, port: [ipaddress.ip_address(address)]


def test_loopback_receivers_are_refused_without_the_test_setting(receiver: Receiver) -> None:
    sender = HttpWebhookSender(timeout_s=5)
    with pytest.raises(WebhookUrlRefused):
        sender.post(receiver.url.replace("http://", "https://"), b"{}", {})
    assert receiver.received == []


def test_a_name_that_rebinds_to_a_private_address_is_refused_at_connect(receiver: Receiver) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    url = f"https://hooks.example.test:{port}/hooks/ragline"
    AddressPolicy(resolver=resolving_to("93.184.215.14")).check(url)  # public when subscribed

    sender = HttpWebhookSender(timeout_s=5, resolver=resolving_to("127.0.0.1"))  # loopback when delivered
    with pytest.raises(WebhookUrlRefused, match="loopback"):
        sender.post(url, b"{}", {})
    assert receiver.received == []


def test_the_connection_goes_to_the_checked_address_with_the_urls_host(receiver: Receiver) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    sender = HttpWebhookSender(timeout_s=5, allow_loopback=True, resolver=resolving_to("127.0.0.1"))
    sender.post(f"http://hooks.example.test:{port}/hooks/ragline", b"{}", {})
    assert [r.headers["host"] for r in receiver.received] == [f"hooks.example.test:{port}"]


def test_an_unreachable_receiver_is_a_failed_attempt() -> None:
    sender = HttpWebhookSender(timeout_s=2, allow_loopback=True)
    with pytest.raises(DeliveryFailed):
        sender.post("http://127.0.0.1:9/closed", b"{}", {})
