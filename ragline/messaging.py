"""Consuming Ragline events from SQS the one way every context does: Powertools batch processing
with partial-batch failures, the envelope parsed into its contract, and the event's correlation id
put on the logger before the record is handled.

Nothing retries forever: a record that fails on its queue's last delivery (SQS's
`ApproximateReceiveCount` has reached the queue's `max_receive_count`, from ragline.topology) is
handed to `on_exhausted(detail, error)` first, so the consumer can record the failure (mark the
document failed, publish DocumentFailed); the record still fails, and SQS moves it to the
dead-letter queue on its next receive."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
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
    logger: Logger,
    accepts: Sequence[type[EventDetail]],
    handle: Callable[[Any], object],
    *,
    max_receive_count: int | None = None,
    on_exhausted: Callable[[Any, Exception], object] | None = None,
    prepare: Callable[[list[Any]], AbstractContextManager[object]] | None = None,
) -> Handler:
    """A Lambda handler for an SQS queue carrying the `accepts` events.

    `handle` gets the parsed event detail; raising fails only that record (it comes back after
    the visibility timeout and goes to the DLQ after the queue's max receives). With
    `max_receive_count` (the queue's) and `on_exhausted`, the last delivery's failure is reported
    to `on_exhausted` before the record fails; an error there is logged, never raised.

    `prepare`, if given, is entered with every parseable detail of the batch before the records
    are handled one by one (work that is cheaper done for the batch at once), and left after."""
    by_type = {detail.DETAIL_TYPE: detail for detail in accepts}

    def parse(record: SQSRecord) -> Any:
        body = json.loads(record.body)
        detail_type = body.get("detail-type")
        if detail_type not in by_type:
            raise UnexpectedEvent(f"unexpected detail-type {detail_type!r}")
        return parse_envelope(body, by_type[detail_type]).detail

    def record_handler(record: SQSRecord) -> object:
        detail = parse(record)
        logger.set_correlation_id(detail.metadata.correlation_id)
        try:
            return handle(detail)
        except Exception as exc:
            if on_exhausted is not None and _last_delivery(record, max_receive_count):
                logger.error(
                    "last delivery failed; the message goes to the dead-letter queue",
                    extra={"receive_count": record.attributes.approximate_receive_count},
                )
                try:
                    on_exhausted(detail, exc)
                except Exception:
                    logger.exception("recording the exhausted retries failed")
            raise

    def batch_context(event: dict[str, Any]) -> AbstractContextManager[object]:
        if prepare is None:
            return nullcontext()
        details = []
        for raw in event.get("Records", []):
            try:
                details.append(parse(SQSRecord(raw)))
            except Exception:  # noqa: S112 - it fails again, on its own, in record_handler
                continue
        return prepare(details)

    return sqs_records_handler(logger, record_handler, batch_context)


def sqs_records_handler(
    logger: Logger,
    handle_record: Callable[[SQSRecord], object],
    batch_context: Callable[[dict[str, Any]], AbstractContextManager[object]] | None = None,
) -> Handler:
    """The same batch semantics for queues that carry something else than Ragline's envelope (AWS
    service events such as S3's): `handle_record` gets each raw SQS record."""
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        with batch_context(event) if batch_context else nullcontext():
            return process_partial_response(
                event=event, record_handler=handle_record, processor=processor, context=context
            )

    return handler


def _last_delivery(record: SQSRecord, max_receive_count: int | None) -> bool:
    count = record.attributes.approximate_receive_count
    return max_receive_count is not None and count is not None and int(count) >= max_receive_count
