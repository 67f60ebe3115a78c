"""Shared fixtures for integration tests.

`aws_platform` starts moto and builds the resources with the local platform's provisioner, from
ragline.topology (the same specs the CDK app builds from), so the fakes cannot drift from what is
deployed: buckets, the documents table, every queue with its dead-letter queue, the bus and its rules. An extra
`observer` queue receives everything on the bus, so tests can see events no rule routes yet.
`lambda_context` is the context object Powertools reads in handlers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto import mock_aws

from ragline import aws
from ragline.events import parse_envelope
from ragline.local.provision import provision
from ragline.local.sqs_runner import lambda_sqs_event
from ragline.settings import Settings
from ragline.topology import BUS_NAME, physical_name
from tests.support.event_contracts import PublishedEvents, subscribe_queue

REGION = "us-east-1"
OBSERVER_QUEUE = "observer"


@dataclass(frozen=True)
class LambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:test-function"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@dataclass
class AwsPlatform:
    """Clients and names of a moto-backed platform built from the topology."""

    settings: Settings
    s3: Any
    dynamodb: Any
    sqs: Any
    events: Any
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_arns: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)  # what the provisioner tells the functions

    def receive(self, queue: str, *, expected: int = 1, attempts: int = 5) -> list[dict[str, Any]]:
        """Messages from a queue (by topology name), received but not deleted."""
        messages: list[dict[str, Any]] = []
        for _ in range(attempts):
            response = self.sqs.receive_message(
                QueueUrl=self.queue_urls[queue],
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            )
            messages.extend(response.get("Messages", []))
            if len(messages) >= expected:
                break
        return messages

    def sqs_event(self, queue: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """What Lambda's SQS event source mapping hands the function for these messages."""
        return lambda_sqs_event(messages, self.queue_arns[queue], REGION)

    def events_on(self, queue: str, detail_type: type, *, expected: int = 1) -> list[Any]:
        """Envelopes of `detail_type` that reached a queue."""
        bodies = [json.loads(m["Body"]) for m in self.receive(queue, expected=expected)]
        return [
            parse_envelope(b, detail_type) for b in bodies if b.get("detail-type") == detail_type.DETAIL_TYPE
        ]


def _add_observer(platform: AwsPlatform) -> None:
    """A queue that receives every ragline.* event on the bus, for events no rule routes yet."""
    url, arn = subscribe_queue(platform.sqs, platform.events, OBSERVER_QUEUE)
    platform.queue_urls[OBSERVER_QUEUE], platform.queue_arns[OBSERVER_QUEUE] = url, arn


def provisioned_platform(settings: Settings) -> AwsPlatform:
    """Clients for `settings` and every resource the local platform's own provisioner creates, so tests
    run on exactly what `ragline dev` creates; plus the observer queue. Settings gain the queue URLs."""
    platform = AwsPlatform(
        settings=settings,
        s3=aws.client("s3", settings),
        dynamodb=aws.client("dynamodb", settings),
        sqs=aws.client("sqs", settings),
        events=aws.client("events", settings),
    )
    provisioned = provision(settings)
    platform.queue_urls.update(provisioned.queue_urls)
    platform.queue_arns.update(provisioned.queue_arns)
    platform.environment.update(provisioned.environment())
    _add_observer(platform)
    platform.settings = settings.model_copy(
        update={
            "index_queue_url": platform.queue_urls["index"],
            "uploads_queue_url": platform.queue_urls["uploads"],
        }
    )
    return platform


@pytest.fixture
def aws_platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsPlatform]:
    # No credentials or endpoint from the developer's shell may reach boto3 inside the mock.
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "RAGLINE_AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        settings = Settings(
            aws_region=REGION,
            aws_endpoint_url=None,
            raw_bucket=physical_name("raw"),
            parsed_bucket=physical_name("parsed"),
            documents_table=physical_name("documents"),
            event_bus=BUS_NAME,
        )
        platform = provisioned_platform(settings)
        published = PublishedEvents(platform.sqs, platform.events)
        yield platform
        # Whatever the test made a producer publish must match the committed event catalogue.
        assert published.violations() == []
