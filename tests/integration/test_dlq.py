"""`ragline dlq`: the dead-letter queues of the topology's queues (as provisioned for the local
platform, in moto), their depths, and redriving one back to its queue without losing a message."""

from __future__ import annotations

import json

import pytest

from ragline import dlq
from ragline.topology import TOPOLOGY
from tests.integration.conftest import AwsPlatform


def dead_letters(platform: AwsPlatform, queue: str, count: int) -> list[str]:
    pair = {p.name: p for p in dlq.local_pairs(platform.sqs)}[queue]
    bodies = [json.dumps({"n": n}) for n in range(count)]
    for n, body in enumerate(bodies):
        platform.sqs.send_message(
            QueueUrl=pair.dlq_url,
            MessageBody=body,
            MessageAttributes={"attempt": {"DataType": "Number", "StringValue": str(n)}},
        )
    return bodies


def test_every_topology_queue_has_its_dead_letter_queue(aws_platform: AwsPlatform) -> None:
    pairs = dlq.local_pairs(aws_platform.sqs)
    assert [p.name for p in pairs] == [q.name for q in TOPOLOGY.queues]
    for pair in pairs:
        redrive = json.loads(
            aws_platform.sqs.get_queue_attributes(QueueUrl=pair.queue_url, AttributeNames=["RedrivePolicy"])[
                "Attributes"
            ]["RedrivePolicy"]
        )
        assert redrive["deadLetterTargetArn"].endswith(f":{pair.dlq_url.rsplit('/', 1)[1]}")
        assert dlq.depth(aws_platform.sqs, pair.dlq_url) == 0


def test_redrive_moves_every_message_back_with_its_attributes(aws_platform: AwsPlatform) -> None:
    sqs = aws_platform.sqs
    bodies = dead_letters(aws_platform, "index", 23)
    pair = {p.name: p for p in dlq.local_pairs(sqs)}["index"]
    assert dlq.depth(sqs, pair.dlq_url) == 23
    progress: list[int] = []
    assert dlq.redrive(sqs, pair, progress=progress.append) == 23
    assert progress == [10, 20, 23]
    assert dlq.depth(sqs, pair.dlq_url) == 0
    received = []
    while batch := sqs.receive_message(
        QueueUrl=pair.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        received += batch
        sqs.delete_message_batch(
            QueueUrl=pair.queue_url,
            Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in batch],
        )
    assert sorted(m["Body"] for m in received) == sorted(bodies)
    attempts = {
        json.loads(m["Body"])["n"]: m["MessageAttributes"]["attempt"]["StringValue"] for m in received
    }
    assert attempts == {n: str(n) for n in range(23)}


def test_redrive_stops_at_the_limit_and_leaves_the_rest(aws_platform: AwsPlatform) -> None:
    sqs = aws_platform.sqs
    dead_letters(aws_platform, "ingest", 5)
    pair = {p.name: p for p in dlq.local_pairs(sqs)}["ingest"]
    assert dlq.redrive(sqs, pair, limit=3) == 3
    assert dlq.depth(sqs, pair.queue_url) == 3
    # the two left are in flight for VISIBILITY_S, then visible again in the DLQ: none is lost
    assert dlq.depth(sqs, pair.dlq_url) == 2


def test_the_cli_lists_and_redrives_against_the_local_platform(
    aws_platform: AwsPlatform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    from ragline import cli

    dead_letters(aws_platform, "uploads", 2)
    # the CLI builds its own client for the moto server; here, the in-process mock's
    monkeypatch.setattr(boto3, "client", lambda service, **_: aws_platform.sqs)
    assert cli.main(["dlq", "list"]) == 0
    depths = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert depths == {q.name: "2" if q.name == "uploads" else "0" for q in TOPOLOGY.queues}
    assert cli.main(["dlq", "redrive", "uploads"]) == 0
    assert "2 messages moved" in capsys.readouterr().out
    assert cli.main(["dlq", "redrive", "nope"]) == 2


def test_a_deployments_queues_are_found_by_their_cloudformation_names(aws_platform: AwsPlatform) -> None:
    sqs = aws_platform.sqs
    made = {}
    for spec in TOPOLOGY.queues:
        pascal = "".join(part.capitalize() for part in spec.name.split("-"))
        # CloudFormation's physical names: <stack>-<logical id with CDK's hash>-<random>
        dead = sqs.create_queue(QueueName=f"Ragline-prod-Platform-{pascal}Dlq1A2B3C4D-XyZ12")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = sqs.create_queue(
            QueueName=f"Ragline-prod-Platform-{pascal}Queue5E6F7A8B-AbC34",
            Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})},
        )["QueueUrl"]
        made[spec.name] = (queue, dead)
    pairs = dlq.deployed_pairs(sqs, "prod")
    assert {p.name: (p.queue_url, p.dlq_url) for p in pairs} == made
    with pytest.raises(dlq.RedriveError, match="is stage 'staging' deployed"):
        dlq.deployed_pairs(sqs, "staging")
