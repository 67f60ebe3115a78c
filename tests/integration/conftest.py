"""Shared fixtures for integration tests.

`aws_platform` starts moto and builds the resources from ragline.topology (the same specs the CDK
app and the local platform build from), so the fakes cannot drift from what is deployed: buckets,
the documents table, every queue with its dead-letter queue, the bus and its rules. An extra
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
from ragline.settings import Settings
from ragline.topology import BUS_NAME, TOPOLOGY, dlq_name, physical_name

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
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {
                        "ApproximateReceiveCount": m.get("Attributes", {}).get(
                            "ApproximateReceiveCount", "1"
                        ),
                        "SentTimestamp": m.get("Attributes", {}).get("SentTimestamp", "0"),
                        "SenderId": "AIDAEXAMPLE",
                        "ApproximateFirstReceiveTimestamp": "0",
                    },
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arns[queue],
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }

    def events_on(self, queue: str, detail_type: type, *, expected: int = 1) -> list[Any]:
        """Envelopes of `detail_type` that reached a queue."""
        bodies = [json.loads(m["Body"]) for m in self.receive(queue, expected=expected)]
        return [
            parse_envelope(b, detail_type) for b in bodies if b.get("detail-type") == detail_type.DETAIL_TYPE
        ]


def _create_queues(platform: AwsPlatform) -> None:
    for spec in TOPOLOGY.queues:
        dlq_url = platform.sqs.create_queue(QueueName=dlq_name(spec.name))["QueueUrl"]
        dlq_arn = platform.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        url = platform.sqs.create_queue(
            QueueName=physical_name(spec.name),
            Attributes={
                "VisibilityTimeout": str(spec.visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(spec.max_receive_count)}
                ),
            },
        )["QueueUrl"]
        platform.queue_urls[spec.name] = url
    url = platform.sqs.create_queue(QueueName=physical_name(OBSERVER_QUEUE))["QueueUrl"]
    platform.queue_urls[OBSERVER_QUEUE] = url
    for name, url in platform.queue_urls.items():
        platform.queue_arns[name] = platform.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]


def _create_rules(platform: AwsPlatform) -> None:
    platform.events.create_event_bus(Name=BUS_NAME)
    rules = [
        (physical_name(r.name), {"source": [r.source], "detail-type": list(r.detail_types)}, r.queue)
        for r in TOPOLOGY.rules
    ]
    rules.append((physical_name(OBSERVER_QUEUE), {"source": [{"prefix": "ragline."}]}, OBSERVER_QUEUE))
    for name, pattern, queue in rules:
        platform.events.put_rule(Name=name, EventBusName=BUS_NAME, EventPattern=json.dumps(pattern))
        platform.events.put_targets(
            Rule=name, EventBusName=BUS_NAME, Targets=[{"Id": queue, "Arn": platform.queue_arns[queue]}]
        )


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
        platform = AwsPlatform(
            settings=settings,
            s3=aws.client("s3", settings),
            dynamodb=aws.client("dynamodb", settings),
            sqs=aws.client("sqs", settings),
            events=aws.client("events", settings),
        )
        for bucket in (settings.raw_bucket, settings.parsed_bucket):
            platform.s3.create_bucket(Bucket=bucket)
        for table in TOPOLOGY.tables:
            keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
            platform.dynamodb.create_table(
                TableName=physical_name(table.name),
                KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
                AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                BillingMode="PAY_PER_REQUEST",
            )
        _create_queues(platform)
        _create_rules(platform)
        platform.settings = settings.model_copy(update={"index_queue_url": platform.queue_urls["index"]})
        yield platform
