"""notify-fanout: consumes notify-events, where the bus rules deliver every public event, and queues
one delivery per matching subscription (domain/delivery.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.notify import wiring
from functions.notify.domain.delivery import Fanout
from ragline.contracts import PUBLIC_EVENT_TYPES
from ragline.events import parse_envelope
from ragline.messaging import Handler, UnexpectedEvent, sqs_records_handler
from ragline.observability import logger as make_logger

logger = make_logger("notify-fanout")
_PUBLIC = {detail.DETAIL_TYPE: detail for detail in PUBLIC_EVENT_TYPES}


def make_handler(fanout: Callable[[], Fanout]) -> Handler:
    def handle(record: SQSRecord) -> None:
        envelope = json.loads(record.body)
        detail_type = envelope.get("detail-type")
        if detail_type not in _PUBLIC:
            raise UnexpectedEvent(f"unexpected detail-type {detail_type!r}")
        # Validated against its contract; the webhook body is the envelope as the bus delivered it.
        metadata = parse_envelope(envelope, _PUBLIC[detail_type]).detail.metadata
        logger.set_correlation_id(metadata.correlation_id)
        queued = fanout().fan_out(envelope, metadata)
        logger.info("event fanned out", extra={"detail_type": detail_type, "deliveries": queued})

    return sqs_records_handler(logger, handle)


handler = make_handler(wiring.fanout)
