"""ingest-object-created: consumes the uploads queue, which carries two kinds of message, told
apart by their `detail-type`:

- S3's "Object Created" events for the raw bucket's `raw/` keys, delivered by a rule on the
  account's default event bus: they complete presigned uploads (UploadService.complete). They are
  AWS's S3 event (source `aws.s3`), not a Ragline contract, and are parsed with Powertools' model.
  The originals of inline bodies raise these events too; their records are never awaiting an
  upload, so they are acknowledged as ignored.
- `UploadDeadline`, which ingest sends itself (delayed) when it hands out an upload URL: it
  completes or expires the upload (UploadService.expire).

Everything else is the other consumers' batch semantics: one record fails alone and comes back,
then goes to the DLQ.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel

from functions.ingest import wiring
from functions.ingest.domain.uploads import UploadOutcome, UploadResult, UploadService
from ragline.contracts import UploadDeadline
from ragline.events import parse_envelope
from ragline.messaging import Handler, UnexpectedEvent, sqs_records_handler
from ragline.observability import logger as make_logger
from ragline.topology import S3_OBJECT_CREATED, S3_SOURCE

logger = make_logger("ingest-object-created")


def make_handler(upload_service: Callable[[], UploadService]) -> Handler:
    def object_created(body: str) -> UploadResult:
        event = S3EventNotificationEventBridgeModel.model_validate_json(body)
        if event.source != S3_SOURCE:
            raise UnexpectedEvent(f"unexpected event {event.source}/{event.detail_type}")
        stored = event.detail.object
        if stored.size is None:
            raise UnexpectedEvent(f"an Object Created event without a size for {stored.key}")
        logger.append_keys(bucket=event.detail.bucket.name, key=stored.key)
        return upload_service().complete(event.detail.bucket.name, stored.key, int(stored.size))

    def deadline(body: str) -> UploadResult:
        envelope = parse_envelope(body, UploadDeadline)
        if envelope.source != UploadDeadline.SOURCE:
            raise UnexpectedEvent(f"unexpected event {envelope.source}/{envelope.detail_type}")
        detail = envelope.detail
        logger.set_correlation_id(detail.metadata.correlation_id)
        logger.append_keys(document_id=detail.document_id, version=detail.version)
        return upload_service().expire(detail)

    by_type = {S3_OBJECT_CREATED: object_created, UploadDeadline.DETAIL_TYPE: deadline}

    def handle(record: SQSRecord) -> str:
        detail_type = json.loads(record.body).get("detail-type")
        if detail_type not in by_type:
            raise UnexpectedEvent(f"unexpected detail-type {detail_type!r}")
        result = by_type[detail_type](record.body)
        if result.document is not None:
            logger.set_correlation_id(result.document.correlation_id)
            logger.append_keys(document_id=result.document.id, version=result.document.version)
        log = logger.warning if result.outcome == UploadOutcome.FAILED else logger.info
        log(
            f"{detail_type}: upload {result.outcome}",
            extra={"outcome": result.outcome, "reason": result.reason},
        )
        return result.outcome

    return sqs_records_handler(logger, handle)


handler = make_handler(wiring.upload_service)
