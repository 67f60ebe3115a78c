"""ingest-object-created: consumes the uploads queue, where a rule on the account's default event
bus delivers S3's "Object Created" events for the raw bucket's `raw/` keys, and completes presigned
uploads (UploadService.complete).

The messages are AWS's S3 event (source `aws.s3`), not a Ragline contract: they are parsed with
Powertools' model of it. Everything else is the other consumers' batch semantics: one record fails
alone and comes back, then goes to the DLQ. The originals of inline bodies raise these events too;
their records are never awaiting an upload, so they are acknowledged as ignored.
"""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel

from functions.ingest import wiring
from functions.ingest.domain.uploads import UploadOutcome, UploadService
from ragline.messaging import Handler, UnexpectedEvent, sqs_records_handler
from ragline.observability import logger as make_logger
from ragline.topology import S3_OBJECT_CREATED, S3_SOURCE

logger = make_logger("ingest-object-created")


def make_handler(upload_service: Callable[[], UploadService]) -> Handler:
    def handle(record: SQSRecord) -> str:
        event = S3EventNotificationEventBridgeModel.model_validate_json(record.body)
        if event.source != S3_SOURCE or event.detail_type != S3_OBJECT_CREATED:
            raise UnexpectedEvent(f"unexpected event {event.source}/{event.detail_type}")
        stored = event.detail.object
        if stored.size is None:
            raise UnexpectedEvent(f"an Object Created event without a size for {stored.key}")
        logger.append_keys(bucket=event.detail.bucket.name, key=stored.key)
        result = upload_service().complete(event.detail.bucket.name, stored.key, int(stored.size))
        if result.document is not None:
            logger.set_correlation_id(result.document.correlation_id)
            logger.append_keys(document_id=result.document.id, version=result.document.version)
        log = logger.warning if result.outcome == UploadOutcome.FAILED else logger.info
        log(f"upload {result.outcome}", extra={"outcome": result.outcome, "reason": result.reason})
        return result.outcome

    return sqs_records_handler(logger, handle)


handler = make_handler(wiring.upload_service)
