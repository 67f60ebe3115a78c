"""notify-deliver: one webhook POST (or email) per message of notify-deliveries.

A failed try fails its record after moving the message's visibility to the backoff the domain
chose (ChangeMessageVisibility: the event source mapping leaves a failed record's visibility as it
is), so it comes back then; after the queue's last receive it is made visible at once and SQS moves it to
the DLQ on the next receive."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.notify import wiring
from functions.notify.domain.delivery import Deliverer, Outcome
from ragline.contracts import DeliveryRequested
from ragline.events import parse_envelope
from ragline.messaging import Handler, sqs_records_handler
from ragline.observability import logger as make_logger
from ragline.topology import TOPOLOGY

logger = make_logger("notify-deliver")
QUEUE = TOPOLOGY.queue("notify-deliveries")


class DeliveryNotDone(RuntimeError):
    """Fails the record: SQS gives it back after its visibility timeout, or to the DLQ."""


def make_handler(
    deliverer: Callable[[], Deliverer],
    sqs: Callable[[], Any],
    *,
    max_receive_count: int = QUEUE.max_receive_count,
) -> Handler:
    def handle(record: SQSRecord) -> None:
        request = parse_envelope(json.loads(record.body), DeliveryRequested).detail
        logger.set_correlation_id(request.metadata.correlation_id)
        logger.append_keys(delivery_id=request.delivery_id, subscription_id=request.subscription_id)
        attempt = int(record.attributes.approximate_receive_count or 1)
        result = deliverer().deliver(request, attempt=attempt, last=attempt >= max_receive_count)
        logger.info(
            "delivery", extra={"outcome": result.outcome.value, "attempt": attempt, "error": result.error}
        )
        if result.outcome in (Outcome.RETRY, Outcome.EXHAUSTED):
            # Exhausted: visible at once, so the next receive moves it to the DLQ without waiting.
            sqs().change_message_visibility(
                QueueUrl=record.queue_url,  # built from the record's eventSourceARN
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=result.retry_after_s,
            )
            raise DeliveryNotDone(result.error or "delivery failed")

    return sqs_records_handler(logger, handle)


handler = make_handler(wiring.deliverer, wiring.sqs_client)
