"""Collections, dedupe, Idempotency-Key, listing, triple delivery and exhausted retries, against
moto: the tables, queues (with their redrive policies) and bus rules built from ragline.topology."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import lancedb
import pytest

from functions.index.handlers import worker as index_worker
from functions.ingest import wiring
from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.handlers import api, status
from functions.ingest.handlers import worker as ingest_worker
from ragline.contracts import (
    Chunk,
    ChunksReady,
    DocumentFailed,
    DocumentIndexed,
    DocumentStatus,
    DocumentUploaded,
    IndexingStarted,
)
from ragline.events import parse_envelope
from ragline.search.lance import LanceIndex
from ragline.topology import TOPOLOGY, dlq_name

from .conftest import AwsPlatform
from .test_index_worker import DIM, DownEmbedder, service
from .test_ingest_handlers import ENGINEER, OUTSIDER, TOKENIZER, get_event, new_document, rest_event

OTHER_ENGINEER = {"sub": "user-3", "cognito:groups": "engineering"}
SALES = {"sub": "user-4", "cognito:groups": "sales"}
LONG = "# Keys\n\n" + " ".join(f"Rotate signing key number {i} every ninety days." for i in range(16))


@pytest.fixture
def search(tmp_path) -> LanceIndex:
    return LanceIndex(
        lancedb.connect(tmp_path, read_consistency_interval=timedelta(0)), "chunks", dimension=DIM
    )


@pytest.fixture
def services(aws_platform: AwsPlatform) -> wiring.IngestServices:
    p = aws_platform
    return wiring.build(
        p.settings.model_copy(update={"chunk_max_tokens": 24, "chunk_overlap_tokens": 4}),
        s3=p.s3,
        dynamodb=p.dynamodb,
        events=p.events,
        sqs=p.sqs,
        tokenizer=TOKENIZER,
    )


@pytest.fixture
def call(services: wiring.IngestServices, lambda_context):
    app = api.create_app(
        lambda: services.documents,
        lambda: services.uploads,
        collections=lambda: services.collections,
        idempotency=lambda: services.idempotency,
    )

    def invoke(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = app.resolve(event, lambda_context)
        return response["statusCode"], json.loads(response["body"])

    return invoke


def post(path: str, body: Any, claims: dict[str, str] = ENGINEER, **headers: str) -> dict[str, Any]:
    return rest_event("POST", path, body=body, claims=claims, headers=headers)


def listing(claims: dict[str, str] = ENGINEER, **query: str) -> dict[str, Any]:
    event = rest_event("GET", "/v1/documents", claims=claims)
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
    return event


def record(p: AwsPlatform, document_id: str):
    return DynamoDocumentRepository(p.dynamodb, p.settings.documents_table).get(document_id)


def redeliver(p: AwsPlatform, queue: str, message: dict[str, Any]) -> dict[str, Any]:
    """The message received again from SQS (visible at once), with its new receive count."""
    p.sqs.change_message_visibility(
        QueueUrl=p.queue_urls[queue], ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    (again,) = p.receive(queue)
    return again


# ---------------------------------------------------------------------------------------------
# Collections
# ---------------------------------------------------------------------------------------------


def test_collections_are_created_listed_and_shown(call) -> None:
    body = {"name": "legal", "chunk_max_tokens": 64, "chunk_overlap_tokens": 8}
    status_code, created = call(post("/v1/collections", body))
    assert status_code == 201
    assert (created["name"], created["chunk_max_tokens"], created["chunk_overlap_tokens"]) == ("legal", 64, 8)

    assert call(post("/v1/collections", body))[0] == 409
    assert call(post("/v1/collections", body))[1]["error"]["code"] == "collection_exists"
    assert call(post("/v1/collections", {"name": "default"}))[1]["error"]["code"] == "collection_exists"

    status_code, listed = call(rest_event("GET", "/v1/collections"))
    assert status_code == 200 and [c["name"] for c in listed["items"]] == ["default", "legal"]
    assert listed["items"][0]["chunk_max_tokens"] == 24  # the deployment's settings

    one = rest_event(
        "GET", "/v1/collections/legal", resource="/v1/collections/{name}", path_parameters={"name": "legal"}
    )
    assert call(one) == (200, created)
    missing = rest_event(
        "GET", "/v1/collections/nope", resource="/v1/collections/{name}", path_parameters={"name": "nope"}
    )
    assert call(missing)[0] == 404 and call(missing)[1]["error"]["code"] == "collection_not_found"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "Bad Name"}, "validation_error"),
        ({"name": "x", "chunk_max_tokens": 64, "chunk_overlap_tokens": 64}, "validation_error"),
        ({"name": "x", "embedding_model": "bge-large"}, "unsupported_embedding_model"),
        # MiniLM takes 256 tokens with [CLS] and [SEP]: a 255-token chunk would be refused later
        ({"name": "x", "chunk_max_tokens": 255}, "chunk_too_large"),
    ],
)
def test_bad_collections_are_422(call, body: dict[str, Any], code: str) -> None:
    status_code, payload = call(post("/v1/collections", body))
    assert (status_code, payload["error"]["code"]) == (422, code)


def test_a_document_in_an_unknown_collection_is_404(aws_platform: AwsPlatform, call) -> None:
    status_code, payload = call(post("/v1/documents", new_document(collection="nope")))
    assert (status_code, payload["error"]["code"]) == (404, "collection_not_found")
    assert aws_platform.s3.list_objects_v2(Bucket=aws_platform.settings.raw_bucket).get("KeyCount", 0) == 0


def test_the_worker_chunks_with_the_collections_settings(
    aws_platform: AwsPlatform, services, call, lambda_context
) -> None:
    p = aws_platform
    call(post("/v1/collections", {"name": "wide", "chunk_max_tokens": 254, "chunk_overlap_tokens": 0}))
    narrow = call(post("/v1/documents", new_document(text=LONG)))[1]["document_id"]
    wide = call(post("/v1/documents", new_document(text=LONG, collection="wide")))[1]["document_id"]
    handler = ingest_worker.make_handler(lambda: services.chunking)
    assert handler(p.sqs_event("ingest", p.receive("ingest", expected=2)), lambda_context) == {
        "batchItemFailures": []
    }
    assert record(p, narrow).chunk_count > 5 and record(p, wide).chunk_count == 1


# ---------------------------------------------------------------------------------------------
# Dedupe and Idempotency-Key
# ---------------------------------------------------------------------------------------------


def test_identical_content_is_deduplicated_with_200(aws_platform: AwsPlatform, call) -> None:
    p = aws_platform
    first_status, first = call(post("/v1/documents", new_document()))
    again_status, again = call(post("/v1/documents", new_document(title="Another title"), OTHER_ENGINEER))
    assert (first_status, first["deduplicated"]) == (202, False)
    assert (again_status, again["deduplicated"]) == (200, True)
    assert (again["document_id"], again["version"]) == (first["document_id"], first["version"])
    assert len(p.events_on("observer", DocumentUploaded, expected=2)) == 1

    # Another audience is another document.
    other_status, other = call(post("/v1/documents", new_document(allowed_groups=["engineering", "sales"])))
    assert other_status == 202 and other["document_id"] != first["document_id"]


def test_an_idempotency_key_replays_the_first_response(aws_platform: AwsPlatform, call) -> None:
    p = aws_platform
    first = call(post("/v1/documents", new_document(), **{"Idempotency-Key": "key-1"}))
    again = call(post("/v1/documents", new_document(), **{"Idempotency-Key": "key-1"}))
    assert first[0] == again[0] == 202
    assert again[1] == first[1]  # the same response: same id, same correlation id, not "deduplicated"
    assert len(p.events_on("observer", DocumentUploaded, expected=2)) == 1

    reused = call(post("/v1/documents", new_document(title="Changed"), **{"Idempotency-Key": "key-1"}))
    assert (reused[0], reused[1]["error"]["code"]) == (409, "idempotency_key_reused")

    # Keys are per caller: another caller's identical key is a request of its own.
    theirs = call(post("/v1/documents", new_document(), OTHER_ENGINEER, **{"Idempotency-Key": "key-1"}))
    assert theirs[0] == 200 and theirs[1]["deduplicated"] is True


def test_a_failed_request_stores_no_idempotent_response(call) -> None:
    missing = call(post("/v1/documents", new_document(collection="later"), **{"Idempotency-Key": "k2"}))
    assert missing[0] == 404
    call(post("/v1/collections", {"name": "later"}))
    retried = call(post("/v1/documents", new_document(collection="later"), **{"Idempotency-Key": "k2"}))
    assert retried[0] == 202


def test_a_malformed_idempotency_key_is_422(call) -> None:
    status_code, payload = call(post("/v1/documents", new_document(), **{"Idempotency-Key": "has space"}))
    assert (status_code, payload["error"]["code"]) == (422, "validation_error")


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------


def test_listing_pages_filters_and_hides(aws_platform: AwsPlatform, services, call, lambda_context) -> None:
    call(post("/v1/collections", {"name": "legal"}))
    ids = [
        call(post("/v1/documents", new_document(text=f"# Doc {i}\n\nBody {i}.")))[1]["document_id"]
        for i in range(3)
    ]
    legal = call(post("/v1/documents", new_document(text="# Law\n\nText.", collection="legal")))[1]
    hidden = call(post("/v1/documents", new_document(text="# Pay\n\nRuns.", allowed_groups=["finance"])))[1]

    seen, cursor = [], None
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        status_code, page = call(listing(OTHER_ENGINEER, **query))
        assert status_code == 200 and len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [legal["document_id"], *ids[::-1]]  # newest first; finance's document not shown

    assert [i["id"] for i in call(listing(collection="legal"))[1]["items"]] == [legal["document_id"]]
    assert [i["id"] for i in call(listing(SALES))[1]["items"]] == []
    assert [i["id"] for i in call(listing(OUTSIDER))[1]["items"]] == [hidden["document_id"]]  # finance
    assert call(listing())[1]["items"][0]["id"] == hidden["document_id"]  # its owner sees it

    p = aws_platform
    ingest_worker.make_handler(lambda: services.chunking)(
        p.sqs_event("ingest", p.receive("ingest", expected=1)), lambda_context
    )
    chunked = call(listing(status="chunked"))[1]["items"]
    assert chunked and all(item["status"] == "chunked" for item in chunked)


@pytest.mark.parametrize(
    ("query", "status_code", "code"),
    [
        ({"limit": "0"}, 422, "validation_error"),
        ({"limit": "101"}, 422, "validation_error"),
        ({"status": "sleeping"}, 422, "validation_error"),
        ({"cursor": "not-a-cursor"}, 400, "invalid_cursor"),
    ],
)
def test_bad_listing_queries(call, query: dict[str, str], status_code: int, code: str) -> None:
    got_status, payload = call(listing(**query))
    assert (got_status, payload["error"]["code"]) == (status_code, code)


# ---------------------------------------------------------------------------------------------
# Every consumer, the same message three times
# ---------------------------------------------------------------------------------------------


def parsed_objects(p: AwsPlatform) -> dict[str, bytes]:
    listed = p.s3.list_objects_v2(Bucket=p.settings.parsed_bucket).get("Contents", [])
    return {
        o["Key"]: p.s3.get_object(Bucket=p.settings.parsed_bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }


def rows(index) -> list[dict[str, Any]]:
    """Every row of the LanceDB table, vectors included, in chunk id order."""
    return index._readable().to_arrow().sort_by("chunk_id").to_pylist()


def comparable(document) -> dict[str, Any]:
    return document.model_dump(exclude={"updated_at", "stage_times"})


def test_triple_delivery_leaves_what_one_delivery_leaves(
    aws_platform: AwsPlatform,
    services,
    call,
    search,
    lambda_context,
) -> None:
    p = aws_platform
    document_id = call(post("/v1/documents", new_document()))[1]["document_id"]

    # ingest worker
    uploaded = p.sqs_event("ingest", p.receive("ingest"))
    chunking = ingest_worker.make_handler(lambda: services.chunking)
    assert chunking(uploaded, lambda_context) == {"batchItemFailures": []}
    once_objects, once_record = parsed_objects(p), comparable(record(p, document_id))
    for _ in range(2):
        assert chunking(uploaded, lambda_context) == {"batchItemFailures": []}
    assert parsed_objects(p) == once_objects
    assert comparable(record(p, document_id)) == once_record
    ready_messages = p.receive("index", expected=3)
    ready = [parse_envelope(m["Body"], ChunksReady) for m in ready_messages]
    assert len(ready) == 3
    assert {r.detail.metadata.idempotency_key for r in ready} == {f"{document_id}:v1:chunks-ready"}
    assert {r.detail.model_dump_json(exclude={"metadata"}) for r in ready} == {
        ready[0].detail.model_dump_json(exclude={"metadata"})
    }

    # index worker
    one_ready = p.sqs_event("index", ready_messages[:1])
    indexing = index_worker.make_handler(lambda svc=service(p, search): svc)
    assert indexing(one_ready, lambda_context) == {"batchItemFailures": []}
    once_rows = rows(search)
    for _ in range(2):
        assert indexing(one_ready, lambda_context) == {"batchItemFailures": []}
    assert rows(search) == once_rows
    assert len(once_rows) == record(p, document_id).chunk_count

    # ingest-status: the index's events, each delivered three times (and in the worst order)
    messages = p.receive("ingest-status", expected=6)
    bodies = [json.loads(m["Body"]) for m in messages]
    assert {b["detail-type"] for b in bodies} == {IndexingStarted.DETAIL_TYPE, DocumentIndexed.DETAIL_TYPE}
    assert len({b["detail"]["metadata"]["idempotency_key"] for b in bodies}) == 2
    applying = status.make_handler(lambda: services.status)
    started = [m for m, b in zip(messages, bodies, strict=True) if b["detail-type"] == "IndexingStarted"][:1]
    done = [m for m, b in zip(messages, bodies, strict=True) if b["detail-type"] == "DocumentIndexed"][:1]
    assert applying(p.sqs_event("ingest-status", done), lambda_context) == {"batchItemFailures": []}
    once_status = record(p, document_id)
    for _ in range(3):
        for batch in (started, done):
            assert applying(p.sqs_event("ingest-status", batch), lambda_context) == {"batchItemFailures": []}
    final = record(p, document_id)
    assert final == once_status  # nothing moved, not even the timestamps
    assert (final.status, final.indexed_count) == (DocumentStatus.INDEXED, final.chunk_count)


def test_the_status_moves_through_every_stage(
    aws_platform: AwsPlatform,
    services,
    call,
    search,
    lambda_context,
) -> None:
    p = aws_platform
    document_id = call(post("/v1/documents", new_document()))[1]["document_id"]
    ingest_worker.make_handler(lambda: services.chunking)(
        p.sqs_event("ingest", p.receive("ingest")), lambda_context
    )
    index_worker.make_handler(lambda svc=service(p, search): svc)(
        p.sqs_event("index", p.receive("index")), lambda_context
    )
    applying = status.make_handler(lambda: services.status)
    received = p.receive("ingest-status", expected=2)
    for detail_type in ("IndexingStarted", "DocumentIndexed"):  # in order this time
        messages = [m for m in received if json.loads(m["Body"])["detail-type"] == detail_type]
        assert applying(p.sqs_event("ingest-status", messages), lambda_context) == {"batchItemFailures": []}
    view = call(get_event(document_id))[1]
    assert view["status"] == "indexed"
    assert list(view["stage_times"]) == ["received", "parsing", "chunked", "embedding", "indexed"]


# ---------------------------------------------------------------------------------------------
# Nothing retries forever
# ---------------------------------------------------------------------------------------------


def test_an_ingest_failure_on_the_last_delivery_fails_the_document_and_reaches_the_dlq(
    aws_platform: AwsPlatform, call, lambda_context
) -> None:
    p = aws_platform
    document_id = call(post("/v1/documents", new_document()))[1]["document_id"]
    broken = wiring.build_chunking_service(
        p.settings.model_copy(update={"raw_bucket": "no-such-bucket"}),
        s3=p.s3,
        dynamodb=p.dynamodb,
        events=p.events,
        sqs=p.sqs,
        tokenizer=TOKENIZER,
    )
    handler = ingest_worker.make_handler(lambda: broken)
    max_receives = TOPOLOGY.queue("ingest").max_receive_count

    (message,) = p.receive("ingest")
    for attempt in range(1, max_receives + 1):
        assert message["Attributes"]["ApproximateReceiveCount"] == str(attempt)
        response = handler(p.sqs_event("ingest", [message]), lambda_context)
        assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
        expected = DocumentStatus.FAILED if attempt == max_receives else DocumentStatus.PARSING
        assert record(p, document_id).status == expected
        if attempt < max_receives:
            message = redeliver(p, "ingest", message)

    document = record(p, document_id)
    assert document.failure_code == "retries_exhausted" and "NoSuchBucket" in document.failure_reason
    failures = p.events_on("observer", DocumentFailed, expected=3)
    assert [(f.detail.stage, f.detail.code) for f in failures] == [("ingest", "retries_exhausted")]

    # The next receive finds the receive count spent: SQS (moto) moves the message to the DLQ.
    p.sqs.change_message_visibility(
        QueueUrl=p.queue_urls["ingest"], ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    assert p.receive("ingest", expected=0, attempts=1) == []
    dlq_url = p.sqs.get_queue_url(QueueName=dlq_name("ingest"))["QueueUrl"]
    (dead,) = p.sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert json.loads(dead["Body"])["detail"]["document_id"] == document_id


def test_an_index_failure_on_the_last_delivery_is_published_and_applied(
    aws_platform: AwsPlatform,
    services,
    call,
    search,
    lambda_context,
) -> None:
    p = aws_platform
    document_id = call(post("/v1/documents", new_document()))[1]["document_id"]
    ingest_worker.make_handler(lambda: services.chunking)(
        p.sqs_event("ingest", p.receive("ingest")), lambda_context
    )
    handler = index_worker.make_handler(lambda svc=service(p, search, DownEmbedder()): svc)

    (message,) = p.receive("index")
    for attempt in range(1, TOPOLOGY.queue("index").max_receive_count + 1):
        assert handler(p.sqs_event("index", [message]), lambda_context)["batchItemFailures"]
        if attempt < TOPOLOGY.queue("index").max_receive_count:
            message = redeliver(p, "index", message)

    failures = p.events_on("observer", DocumentFailed, expected=6)
    assert [(f.source, f.detail.code) for f in failures] == [("ragline.index", "retries_exhausted")]
    outcome = [m for m in p.receive("ingest-status", expected=4) if "DocumentFailed" in m["Body"]]
    status.make_handler(lambda: services.status)(p.sqs_event("ingest-status", outcome), lambda_context)
    document = record(p, document_id)
    assert (document.status, document.failure_code) == (DocumentStatus.FAILED, "retries_exhausted")
    assert "ConnectionError" in document.failure_reason


def test_chunks_carry_the_collection(aws_platform: AwsPlatform, services, call, lambda_context) -> None:
    p = aws_platform
    call(post("/v1/collections", {"name": "legal"}))
    document_id = call(post("/v1/documents", new_document(collection="legal")))[1]["document_id"]
    ingest_worker.make_handler(lambda: services.chunking)(
        p.sqs_event("ingest", p.receive("ingest")), lambda_context
    )
    body = p.s3.get_object(Bucket=p.settings.parsed_bucket, Key=f"parsed/{document_id}/v1/chunks.jsonl")[
        "Body"
    ]
    assert {Chunk.model_validate_json(line).collection for line in body.read().decode().splitlines()} == {
        "legal"
    }
