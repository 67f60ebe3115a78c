"""The local SQS runner behaves like Lambda's event source mapping over real (moto) SQS: reported
failures come back after the visibility timeout, and the redrive policy moves a message that keeps
failing to its DLQ; successes are deleted."""

import json
import time

import pytest
from moto import mock_aws

from ragline import aws
from ragline.local.lambda_runtime import LocalFunction
from ragline.local.sqs_runner import QueuePoller
from ragline.settings import Settings
from ragline.topology import FunctionSpec, QueueSpec


@pytest.fixture
def sqs():
    with mock_aws():
        yield aws.client("sqs", Settings(aws_endpoint_url=None))


def make_queue(sqs, spec: QueueSpec) -> tuple[str, str, str]:
    dlq = sqs.create_queue(QueueName=f"{spec.name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=spec.name,
        Attributes={
            "VisibilityTimeout": str(spec.visibility_timeout_s),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}
            ),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn, dlq


def count(sqs, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_reported_failures_are_retried_then_dead_lettered_and_successes_deleted(sqs):
    spec = QueueSpec(name="work", visibility_timeout_s=1, max_receive_count=2)
    url, arn, dlq = make_queue(sqs, spec)
    seen: list[tuple[str, str]] = []

    def handler(event, context):
        failures = []
        for record in event["Records"]:
            seen.append((record["body"], record["attributes"]["ApproximateReceiveCount"]))
            assert record["eventSourceARN"] == arn and record["eventSource"] == "aws:sqs"
            if record["body"] == "poison":
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    function = LocalFunction(FunctionSpec(name="work", context="t", handler="unused"), handler=handler)
    poller = QueuePoller(sqs, spec, url, arn, function, stop=None, region="us-east-1")  # type: ignore[arg-type]
    sqs.send_message(QueueUrl=url, MessageBody="good")
    sqs.send_message(QueueUrl=url, MessageBody="poison")

    deadline = time.monotonic() + 15
    while count(sqs, dlq) == 0 and time.monotonic() < deadline:
        poller.poll_once()
        time.sleep(0.2)

    assert [body for body, _ in seen].count("good") == 1  # deleted after success, never redelivered
    assert [n for body, n in seen if body == "poison"] == ["1", "2"]  # retried once, then no more
    assert count(sqs, dlq) == 1 and count(sqs, url) == 0
    assert sqs.receive_message(QueueUrl=dlq)["Messages"][0]["Body"] == "poison"


def test_a_handler_that_raises_fails_the_whole_batch(sqs):
    spec = QueueSpec(name="crash", visibility_timeout_s=1, max_receive_count=5)
    url, arn, _ = make_queue(sqs, spec)

    def handler(event, context):
        raise RuntimeError("boom")

    function = LocalFunction(FunctionSpec(name="crash", context="t", handler="unused"), handler=handler)
    poller = QueuePoller(sqs, spec, url, arn, function, stop=None, region="us-east-1")  # type: ignore[arg-type]
    sqs.send_message(QueueUrl=url, MessageBody="a")
    assert poller.poll_once() == 1
    assert count(sqs, url) == 1  # still there, invisible until the timeout
