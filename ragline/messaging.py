"""Consuming Ragline events from SQS the one way every context does: Powertools batch processing
with partial-batch failures, the envelope parsed into its contract, and the event's correlation id
put on the logger before the record is handled."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ragline.contracts import EventDetail
from ragline.events import parse_envelope

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


class UnexpectedEvent(ValueError):
    """A message of a type this consumer does not take: it fails, and the DLQ keeps it."""


def sqs_handler(
    logger: Logger, accepts: Sequence[type[EventDetail]], handle: Callable[[Any], object]
) -> Handler:
    """A Lambda handler for an SQS queue carrying the `accepts` events.

    `handle` gets the parsed event detail; raising fails only that record (it comes back after
    the visibility timeout and goes to the DLQ after the queue's max receives)."""
    by_type = {detail.DETAIL_TYPE: detail for detail in accepts}
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> object:
        body = json.loads(record.body)
        detail_type = body.get("detail-type")
        if detail_type not in by_type:
            raise UnexpectedEvent(f"unexpected detail-type {detail_type!r}")
        detail = parse_envelope(body, by_type[detail_type]).detail
        logger.set_correlation_id(detail.metadata.correlation_id)
        return handle(detail)

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler
