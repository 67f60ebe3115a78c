"""Hostile input at the front door: schemathesis generates requests (valid and invalid) from the
published OpenAPI document (docs/openapi.json) and sends them through the local gateway, in process,
to the real handlers of every route (ingest, retrieve and notify on moto; the answers app over a
scripted retriever and model). No request may get a 5xx or a body that shows a stack trace.

Then the cases a generator rarely reaches: oversized bodies, wrong content types, deeply nested JSON
and path traversal in names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import lancedb
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from starlette.testclient import TestClient

from functions.context.app import create_app as create_answers_app
from functions.context.domain.service import AnswerService
from functions.ingest import wiring as ingest_wiring
from functions.ingest.handlers import api as ingest_api
from functions.notify import wiring as notify_wiring
from functions.notify.handlers import api as notify_api
from functions.retrieve import wiring as retrieve_wiring
from functions.retrieve.handlers import api as retrieve_api
from ragline.local.gateway import create_gateway
from ragline.local.idp import LocalIdentityProvider
from ragline.local.lambda_runtime import LocalFunction
from ragline.search.lance import LanceIndex
from ragline.settings import Settings
from ragline.topology import BUS_NAME, TOPOLOGY
from tests.integration.test_ingest_handlers import TOKENIZER
from tests.integration.test_retrieve_handlers import DIM, HashedBagOfWords
from tests.support.context_fakes import MemoryConversations, RecordingRetriever, ScriptedLlm, hit

from .conftest import REGION, AwsPlatform, provisioned_platform

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# Small enough for the whole file to stay well under a minute on a laptop (about 15 operations).
MAX_EXAMPLES = 12
TRACE_MARKERS = ("Traceback (most recent call last)", 'File "/', "site-packages")


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsPlatform]:
    """conftest's aws_platform, built once for the module: every test here only reads or adds."""
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "RAGLINE_AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        yield provisioned_platform(Settings(aws_region=REGION, aws_endpoint_url=None, event_bus=BUS_NAME))


@pytest.fixture(scope="module")
def idp(tmp_path_factory) -> LocalIdentityProvider:
    return LocalIdentityProvider(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def gateway(aws: AwsPlatform, idp, tmp_path_factory):
    """The topology's routes on the local gateway, each served by its real handler."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    p = aws
    env = p.environment
    app_settings = p.settings.model_copy(
        update={
            "delete_state_machine_arn": env["RAGLINE_DELETE_STATE_MACHINE_ARN"],
            "update_state_machine_arn": env["RAGLINE_UPDATE_STATE_MACHINE_ARN"],
            "webhook_allow_loopback": False,
        }
    )
    services = ingest_wiring.build(
        app_settings, s3=p.s3, dynamodb=p.dynamodb, events=p.events, sqs=p.sqs, tokenizer=TOKENIZER
    )
    deletions = ingest_wiring.build_deletion_requests(app_settings, dynamodb=p.dynamodb)
    updates = ingest_wiring.build_update_requests(app_settings, s3=p.s3, dynamodb=p.dynamodb)
    ingest = ingest_api.create_app(
        lambda: services.documents,
        lambda: services.uploads,
        collections=lambda: services.collections,
        idempotency=lambda: services.idempotency,
        deletions=lambda: deletions,
        updates=lambda: updates,
    )

    index = LanceIndex(
        lancedb.connect(tmp_path / "index", read_consistency_interval=timedelta(0)), "chunks", dimension=DIM
    )
    index.ensure_index()
    retrieve_settings = app_settings.model_copy(
        update={"search_backend": "lance", "lance_path": str(tmp_path / "index"), "embedding_dimension": DIM}
    )
    retrieve_wiring.override(
        retrieve_wiring.build(retrieve_settings, index=index, embedder=HashedBagOfWords())
    )

    subscriptions = notify_wiring.build_subscription_service(app_settings)
    notify = notify_api.create_app(lambda: subscriptions)

    answers = AnswerService(
        RecordingRetriever([hit(1)]),
        ScriptedLlm(["Ninety days [1]."]),
        context_window_tokens=2048,
        conversations=MemoryConversations(),
    )
    handlers = {
        "ingest-api": ingest.resolve,
        "retrieve-api": retrieve_api.app.resolve,
        "notify-api": notify.resolve,
    }
    routes, streaming = [], []
    for spec in TOPOLOGY.functions:
        if spec.asgi:
            assert spec.name == "context-answers", f"no in-process app for {spec.name}"
            app = create_answers_app(lambda: answers)
            streaming += [(r.method, r.path, app) for r in spec.routes]
        elif spec.routes:
            function = LocalFunction(spec, handler=handlers[spec.name])
            routes += [(r.method, r.path, function) for r in spec.routes]
    yield create_gateway(idp, routes, streaming)
    retrieve_wiring.override(None)


@pytest.fixture(scope="module")
def bearer(idp) -> dict[str, str]:
    return {"Authorization": f"Bearer {idp.issue('alice', ['engineering'], tenant='acme')}"}


def no_stack_trace(ctx, response, case) -> None:
    body = response.text if hasattr(response, "text") else response.content.decode(errors="replace")
    leaked = [marker for marker in TRACE_MARKERS if marker in body]
    assert not leaked, f"{case.method} {case.formatted_path}: the body shows a stack trace ({leaked})"


def test_generated_requests_never_get_a_5xx_or_a_stack_trace(gateway, bearer):
    # Not schemathesis' pytest plugin (from_fixture): it reads a node attribute pytest 9 no longer
    # has. One test over every operation, so the platform is built once.
    schema = schemathesis.openapi.from_path(OPENAPI)
    schema.app = gateway
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= len([r for f in TOPOLOGY.functions for r in f.routes])
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=cases)
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def never_fails(case) -> None:
            response = case.call(headers=bearer)
            case.validate_response(response, checks=[not_a_server_error, no_stack_trace])

        never_fails()


# ---------------------------------------------------------------------------------------------
# What a generator rarely reaches
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(gateway) -> TestClient:
    return TestClient(gateway, raise_server_exceptions=False)


@pytest.mark.parametrize("path", ["/v1/documents", "/v1/search", "/v1/answers"])
def test_an_oversized_body_is_413(client, bearer, path):
    body = b'{"text": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = client.post(path, headers={**bearer, "content-type": "application/json"}, content=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/documents", {"title": "t", "text": "hello", "allowed_groups": ["engineering"]}),
        ("/v1/search", {"query": "keys"}),
        ("/v1/answers", {"question": "keys?"}),
        ("/v1/collections", {"name": "runbooks"}),
    ],
)
@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "application/xml"]
)
def test_a_body_that_is_not_json_is_415(client, bearer, path, body, content_type):
    response = client.post(path, headers={**bearer, "content-type": content_type}, content=json.dumps(body))
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("path", ["/v1/documents", "/v1/search", "/v1/answers", "/v1/subscriptions"])
def test_a_body_that_is_not_utf8_is_a_4xx(client, bearer, path):
    response = client.post(
        path, headers={**bearer, "content-type": "application/json"}, content=b'{"q": "\x88"}'
    )
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("path", ["/v1/documents", "/v1/search", "/v1/answers", "/v1/subscriptions"])
@pytest.mark.parametrize("depth", [64, 5000])
def test_deeply_nested_json_is_a_4xx(client, bearer, path, depth):
    nested = "[" * depth + "]" * depth
    body = f'{{"title": "t", "text": "x", "query": "q", "question": "q", "metadata": {{"a": {nested}}}}}'
    response = client.post(path, headers={**bearer, "content-type": "application/json"}, content=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"]


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "a/../../b", "..\\..\\windows", "%2e%2e%2f", "%00"],
)
def test_path_traversal_in_names_is_a_4xx(client, bearer, name):
    headers = {**bearer, "content-type": "application/json"}
    created = client.post("/v1/collections", headers=headers, json={"name": name})
    assert 400 <= created.status_code < 500, created.text
    document = {"title": name, "text": "x", "allowed_groups": ["engineering"], "collection": name}
    assert 400 <= client.post("/v1/documents", headers=headers, json=document).status_code < 500
    for path in (f"/v1/collections/{name}", f"/v1/documents/{name}", f"/v1/conversations/{name}"):
        response = client.get(path, headers=headers)
        assert 400 <= response.status_code < 500, (path, response.text)
        assert "root:" not in response.text
