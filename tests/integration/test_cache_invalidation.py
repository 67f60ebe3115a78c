"""The answer-cache consumer against moto: the bus rules route document changes to its queue, each
one starts a new generation of its collection (and of all collections); a record it cannot read
fails alone."""

from __future__ import annotations

import hashlib

import pytest

from functions.context.adapters.answer_cache import DynamoAnswerCache
from functions.context.handlers import cache_invalidation
from ragline.contracts import (
    DocumentDeleted,
    DocumentIndexed,
    DocumentUpdated,
    EventDetail,
    EventEnvelope,
    EventMetadata,
)
from ragline.events import EventBridgePublisher

from .conftest import AwsPlatform

QUEUE = "answer-cache"


def metadata(key: str) -> EventMetadata:
    return EventMetadata(correlation_id=f"corr-{key}", idempotency_key=key)


def indexed(collection: str = "docs") -> DocumentIndexed:
    return DocumentIndexed(
        metadata=metadata("indexed"), document_id="doc1", version=1, collection=collection, indexed_count=3
    )


def updated(collection: str = "docs") -> DocumentUpdated:
    return DocumentUpdated(
        metadata=metadata("updated"), document_id="doc1", version=2, previous_version=1, collection=collection
    )


def deleted(collection: str = "docs") -> DocumentDeleted:
    return DocumentDeleted(metadata=metadata("deleted"), document_id="doc1", version=2, collection=collection)


def message(message_id: str, body: str) -> dict[str, str]:
    return {
        "MessageId": message_id,
        "ReceiptHandle": f"receipt-{message_id}",
        "Body": body,
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 (SQS's checksum)
    }


def envelope(detail: EventDetail) -> str:
    return EventEnvelope[type(detail)].wrap(detail).model_dump_json(by_alias=True)  # type: ignore[misc]


@pytest.fixture
def cache(aws_platform: AwsPlatform) -> DynamoAnswerCache:
    return DynamoAnswerCache(aws_platform.dynamodb, aws_platform.settings.answer_cache_table, 3600)


def test_document_changes_reach_the_queue_and_invalidate_their_collection(
    aws_platform: AwsPlatform, cache: DynamoAnswerCache, lambda_context
):
    p = aws_platform
    EventBridgePublisher(p.events, p.settings.event_bus).publish_many(
        [indexed(), updated(), deleted("other")]
    )
    messages = p.receive(QUEUE, expected=3)
    assert len(messages) == 3

    response = cache_invalidation.make_handler(lambda: cache)(p.sqs_event(QUEUE, messages), lambda_context)

    assert response == {"batchItemFailures": []}
    assert (cache.scope("docs"), cache.scope("other"), cache.scope(None)) == ("docs#2", "other#1", "*#3")


def test_a_redelivered_event_only_adds_a_generation(
    aws_platform: AwsPlatform, cache: DynamoAnswerCache, lambda_context
):
    handler = cache_invalidation.make_handler(lambda: cache)
    event = aws_platform.sqs_event(QUEUE, [message("m-1", envelope(indexed()))])
    assert handler(event, lambda_context) == {"batchItemFailures": []}
    assert handler(event, lambda_context) == {"batchItemFailures": []}
    assert (cache.scope("docs"), cache.scope(None)) == ("docs#2", "*#2")


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        envelope(indexed()).replace('"DocumentIndexed"', '"DocumentFailed"'),  # a type it does not take
        envelope(indexed()).replace('"collection":"docs",', ""),  # not the contract
    ],
)
def test_a_malformed_record_fails_alone(
    aws_platform: AwsPlatform, cache: DynamoAnswerCache, lambda_context, body: str
):
    event = aws_platform.sqs_event(QUEUE, [message("bad", body), message("good", envelope(deleted()))])

    response = cache_invalidation.make_handler(lambda: cache)(event, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert cache.scope("docs") == "docs#1"


def test_with_the_cache_off_events_are_acknowledged(aws_platform: AwsPlatform, lambda_context):
    event = aws_platform.sqs_event(QUEUE, [message("m-1", envelope(updated()))])
    assert cache_invalidation.make_handler(lambda: None)(event, lambda_context) == {"batchItemFailures": []}
