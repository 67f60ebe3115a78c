"""The retrieve handlers end to end on a LanceDB index in a temporary directory, with API Gateway
REST proxy events built by hand and a deterministic bag-of-words embedder."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import lancedb
import pytest

from functions.retrieve import wiring
from functions.retrieve.adapters.embedder import QueryEmbedder
from functions.retrieve.handlers import api, invoke
from ragline.contracts import Chunk, ErrorResponse, SearchResponse
from ragline.endpoints import EndpointError
from ragline.search.lance import LanceIndex
from ragline.search.port import IndexedChunk
from ragline.settings import Settings, get_settings

DIM = 32


class HashedBagOfWords:
    """Same words, same vector: texts sharing words are close. Deterministic across processes."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._one(text) for text in texts]

    @staticmethod
    def _one(text: str) -> list[float]:
        vector = [0.0] * DIM
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]


@dataclass
class FakeLambdaContext:
    function_name: str = "ragline-retrieve-api"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:ragline-retrieve-api"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"


def chunk(document_id: str, text: str, groups: list[str], **overrides: Any) -> Chunk:
    fields = dict(
        document_id=document_id,
        version=1,
        ordinal=0,
        collection="default",
        title=document_id.title(),
        text=text,
        token_count=len(text.split()),
        heading_path=["Intro"],
        char_start=0,
        char_end=len(text),
        allowed_groups=groups,
    )
    return Chunk(**(fields | overrides))


@pytest.fixture
def index(tmp_path) -> LanceIndex:
    return LanceIndex(
        lancedb.connect(tmp_path, read_consistency_interval=timedelta(0)), "chunks", dimension=DIM
    )


@pytest.fixture(autouse=True)
def service(tmp_path, index):
    embedder = HashedBagOfWords()
    index.ensure_index()
    chunks = [
        chunk("vacation", "Employees take vacation days after approval by their manager.", ["staff"]),
        chunk(
            "expenses",
            "Submit expenses within thirty days with receipts attached.",
            ["staff"],
            collection="finance",
        ),
        chunk("salaries", "Salaries and vacation payouts are confidential.", ["hr"]),
    ]
    index.upsert([IndexedChunk(c, embedder.embed([c.text])[0]) for c in chunks])
    settings = Settings(search_backend="lance", lance_path=str(tmp_path), embedding_dimension=DIM)
    wiring.override(wiring.build(settings, index=index, embedder=embedder))
    yield
    wiring.override(None)


def rest_event(body: Any, *, claims: dict[str, Any] | None, path: str = "/v1/search") -> dict[str, Any]:
    request_context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": "a1b2c3d4e5",
        "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        "httpMethod": "POST",
        "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
        "path": f"/prod{path}",
        "protocol": "HTTP/1.1",
        "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "requestTime": "09/Apr/2025:12:34:56 +0000",
        "requestTimeEpoch": 1744202096000,
        "resourceId": "abc123",
        "resourcePath": path,
        "stage": "prod",
    }
    if claims is not None:
        request_context["authorizer"] = {"claims": claims}
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "Authorization": "Bearer eyJ..."},
        "multiValueHeaders": {"Content-Type": ["application/json"], "Authorization": ["Bearer eyJ..."]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": request_context,
        "body": body if isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }


STAFF = {"sub": "user-1", "cognito:username": "alice", "cognito:groups": "staff", "email": "a@example.com"}


def call(event: dict[str, Any]) -> tuple[int, Any]:
    response = api.handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_search_returns_visible_hits():
    status, body = call(rest_event({"query": "vacation days", "top_k": 5}, claims=STAFF))
    assert status == 200
    hits = SearchResponse.model_validate(body).hits
    assert [h.document_id for h in hits][0] == "vacation"
    assert "salaries" not in {h.document_id for h in hits}  # same words, other group
    assert hits[0].chunk_id == "vacation:v1:0"
    assert hits[0].heading_path == ["Intro"]


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
def test_each_mode_respects_collection_and_top_k(mode):
    status, body = call(
        rest_event(
            {"query": "expenses receipts", "mode": mode, "collection": "finance", "top_k": 1}, claims=STAFF
        )
    )
    assert status == 200
    assert [h["document_id"] for h in body["hits"]] == ["expenses"]


def test_groups_claim_in_rest_authorizer_list_form():
    claims = {"sub": "user-2", "cognito:groups": "[hr staff]"}
    status, body = call(rest_event({"query": "confidential salaries", "mode": "keyword"}, claims=claims))
    assert status == 200
    assert [h["document_id"] for h in body["hits"]] == ["salaries"]


def test_a_caller_without_groups_gets_no_hits():
    status, body = call(rest_event({"query": "vacation"}, claims={"sub": "user-3"}))
    assert (status, body["hits"], body["degraded"]) == (200, [], False)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"query": "vacation", "colour": "blue"}, "colour"),
        ({"query": ""}, "query"),
        ({"query": "vacation", "top_k": 0}, "top_k"),
        ({"query": "vacation", "mode": "semantic"}, "mode"),
    ],
)
def test_invalid_bodies_are_422_validation_errors(payload, field):
    status, body = call(rest_event(payload, claims=STAFF))
    assert status == 422
    error = ErrorResponse.model_validate(body).error
    assert error.code == "validation_error"
    assert any(field in detail["loc"] for detail in error.details)
    assert all(set(detail) == {"loc", "type", "msg"} for detail in error.details)


def test_malformed_json_is_a_422():
    status, body = call(rest_event("{not json", claims=STAFF))
    assert status == 422
    assert body["error"]["code"] == "validation_error"


def test_a_form_encoded_body_is_415():
    # What `curl -d '{...}'` sends when no Content-Type is given.
    content_type = "application/x-www-form-urlencoded"
    event = rest_event({"query": "vacation"}, claims=STAFF)
    event["headers"]["Content-Type"] = content_type
    event["multiValueHeaders"]["Content-Type"] = [content_type]
    status, body = call(event)
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"


def test_missing_claims_are_401():
    status, body = call(rest_event({"query": "vacation"}, claims=None))
    assert status == 401
    assert ErrorResponse.model_validate(body).error.code == "unauthorized"


def test_unknown_route_is_404():
    status, body = call(rest_event({"query": "vacation"}, claims=STAFF, path="/v1/nope"))
    assert status == 404
    assert body["error"]["code"] == "not_found"


def test_unexpected_failures_are_opaque_500s(index):
    class Broken:
        def embed(self, texts):
            raise RuntimeError("endpoint exploded: secret detail")

    wiring.override(wiring.build(Settings(), index=index, embedder=Broken()))
    status, body = call(rest_event({"query": "vacation", "mode": "vector"}, claims=STAFF))
    assert status == 500
    assert body == {"error": {"code": "internal_error", "message": "Internal server error", "details": []}}


# ------------------------------------------------------------------------------------- invoke


def test_invoke_returns_a_search_response():
    event = {
        "principal": {"user_id": "user-1", "groups": ["staff"], "tenant": None},
        "request": {"query": "vacation approval", "top_k": 2},
        "correlation_id": "corr-1",
    }
    result = invoke.handler(event, FakeLambdaContext(function_name="ragline-retrieve-invoke"))
    hits = SearchResponse.model_validate(result).hits
    assert hits[0].document_id == "vacation"
    assert len(hits) <= 2


@pytest.mark.parametrize(
    "event",
    [
        {"request": {"query": "vacation"}},
        {"principal": {"user_id": "u", "groups": ["staff"]}, "request": {"query": ""}},
        {"principal": {"user_id": "u", "groups": ["staff"]}, "request": {"query": "x"}, "extra": 1},
    ],
)
def test_invoke_answers_invalid_payloads_with_an_error(event):
    result = invoke.handler(event, FakeLambdaContext(function_name="ragline-retrieve-invoke"))
    error = ErrorResponse.model_validate(result).error
    assert error.code == "validation_error"
    assert error.details


# ------------------------------------------------------------------- embedding endpoint down


class EndpointDown:
    """The embedding client as it fails when the endpoint is down or its circuit is open."""

    def __init__(self, *, retryable: bool = True) -> None:
        self.retryable = retryable

    def embed(self, texts):
        raise EndpointError("circuit_open", "embedding endpoint circuit is open", retryable=self.retryable)


def with_embedder(index: LanceIndex, embedder: Any) -> None:
    settings = Settings(search_backend="lance", embedding_dimension=DIM)
    wiring.override(wiring.build(settings, index=index, embedder=QueryEmbedder(embedder)))


def test_hybrid_search_answers_from_keywords_when_the_query_cannot_be_embedded(index):
    with_embedder(index, EndpointDown())
    status, body = call(rest_event({"query": "vacation approval"}, claims=STAFF))
    assert status == 200
    assert body["degraded"] is True and body["degraded_reason"] == "embedding_unavailable"
    assert [hit["document_id"] for hit in body["hits"]][:1] == ["vacation"]


def test_a_working_endpoint_is_not_degraded(index):
    with_embedder(index, HashedBagOfWords())
    status, body = call(rest_event({"query": "vacation approval"}, claims=STAFF))
    assert status == 200 and body["degraded"] is False and body["degraded_reason"] is None


def test_vector_search_without_embeddings_is_a_503_with_retry_after(index, monkeypatch):
    monkeypatch.setenv("RAGLINE_BREAKER_OPEN_S", "12.5")
    get_settings.cache_clear()
    with_embedder(index, EndpointDown())
    response = api.handler(
        rest_event({"query": "vacation", "mode": "vector"}, claims=STAFF), FakeLambdaContext()
    )
    get_settings.cache_clear()
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"]["code"] == "embedding_unavailable"
    assert response["multiValueHeaders"]["Retry-After"] == ["13"]


def test_an_endpoint_refusing_the_query_is_not_papered_over(index):
    with_embedder(index, EndpointDown(retryable=False))
    status, body = call(rest_event({"query": "vacation"}, claims=STAFF))
    assert status == 500 and body["error"]["code"] == "internal_error"


def test_invoke_reports_unavailable_embeddings_as_a_typed_error(index):
    with_embedder(index, EndpointDown())
    event = {"principal": {"user_id": "u", "groups": ["staff"]}, "request": {"query": "x", "mode": "vector"}}
    result = invoke.handler(event, FakeLambdaContext(function_name="ragline-retrieve-invoke"))
    assert ErrorResponse.model_validate(result).error.code == "embedding_unavailable"
