"""Dead-letter queues for operators (`ragline dlq list`, `ragline dlq redrive QUEUE`): how many
messages each topology queue's DLQ holds, and moving them back to the queue once the cause is fixed
(docs/runbook.md, "Dead-letter queues").

Redrive receives a batch, sends it to the queue and only then deletes it from the DLQ: a message is
never lost, and one interrupted between the two is delivered twice, which every consumer tolerates
(they check the document's version and status, or deduplicate on the event's idempotency key). The
same calls work on the local platform's moto server and in AWS; SQS's own message move task
(`aws sqs start-message-move-task`) is the alternative for very large DLQs in AWS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ragline.topology import TOPOLOGY, dlq_name, pascal, physical_name

BATCH = 10  # SQS's largest receive and send batch
# Longer than a batch takes to send: received messages are not handed out again meanwhile.
VISIBILITY_S = 60


class RedriveError(RuntimeError):
    pass


@dataclass(frozen=True)
class QueuePair:
    name: str  # the topology's
    queue_url: str
    dlq_url: str


def local_pairs(sqs: Any) -> list[QueuePair]:
    """Every topology queue with its DLQ on the local platform (named by `physical_name`)."""
    return [
        QueuePair(
            spec.name,
            sqs.get_queue_url(QueueName=physical_name(spec.name))["QueueUrl"],
            sqs.get_queue_url(QueueName=dlq_name(spec.name))["QueueUrl"],
        )
        for spec in TOPOLOGY.queues
    ]


def deployed_pairs(sqs: Any, stage: str) -> list[QueuePair]:
    """Every topology queue with its DLQ in a deployment: CloudFormation names them
    `Ragline-<stage>-Platform-<Queue|Dlq logical id>-<suffix>`, and a DLQ knows its source queue."""
    pairs = []
    for spec in TOPOLOGY.queues:
        prefix = f"Ragline-{stage}-Platform-{pascal(spec.name)}Dlq"
        dlqs = sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
        if len(dlqs) != 1:
            raise RedriveError(
                f"{len(dlqs)} queues named {prefix}*: is stage {stage!r} deployed in this region?"
            )
        sources = sqs.list_dead_letter_source_queues(QueueUrl=dlqs[0]).get("queueUrls", [])
        if len(sources) != 1:
            raise RedriveError(f"{dlqs[0]} is the dead-letter queue of {len(sources)} queues, not one")
        pairs.append(QueuePair(spec.name, sources[0], dlqs[0]))
    return pairs


def depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def redrive(
    sqs: Any, pair: QueuePair, *, limit: int | None = None, progress: Callable[[int], None] | None = None
) -> int:
    """Move up to `limit` messages (all, by default) from the DLQ to its queue; returns how many."""
    moved = 0
    while limit is None or moved < limit:
        want = BATCH if limit is None else min(BATCH, limit - moved)
        received = sqs.receive_message(
            QueueUrl=pair.dlq_url,
            MaxNumberOfMessages=want,
            VisibilityTimeout=VISIBILITY_S,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            break
        entries = []
        for n, message in enumerate(received):
            entry = {"Id": str(n), "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                entry["MessageAttributes"] = message["MessageAttributes"]
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=pair.queue_url, Entries=entries)
        done = {entry["Id"] for entry in sent.get("Successful", [])}
        if done:
            sqs.delete_message_batch(
                QueueUrl=pair.dlq_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": message["ReceiptHandle"]}
                    for n, message in enumerate(received)
                    if str(n) in done
                ],
            )
        moved += len(done)
        if progress is not None:
            progress(moved)
        if failed := sent.get("Failed"):
            # What was not sent stays in the DLQ (visible again after VISIBILITY_S).
            raise RedriveError(f"{len(failed)} messages not sent to {pair.name}: {failed[0].get('Message')}")
    return moved
