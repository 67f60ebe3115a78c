"""The answers app as the Lambda Web Adapter drives it: claims in x-amzn-request-context, SSE by
default, one JSON body on Accept: application/json. The retriever and the model are fakes here;
the end-to-end test runs the real ones."""

import json

import pytest
from fastapi.testclient import TestClient

from functions.context.app import create_app
from functions.context.domain.service import AnswerService
from tests.support.context_fakes import RecordingRetriever, ScriptedLlm, hit
from tests.support.sse import parse_sse

CLAIMS = {"sub": "alice", "cognito:groups": "eng,ops"}
CONTEXT = {"x-amzn-request-context": json.dumps({"authorizer": {"claims": CLAIMS}})}


class ExplodingLlm:
    def stream(self, messages, **kwargs):
        yield from ()
        raise RuntimeError("endpoint went away")


@pytest.fixture
def retriever():
    return RecordingRetriever([hit(1), hit(2)])


def client_for(retriever, llm) -> TestClient:
    service = AnswerService(retriever, llm, context_window_tokens=2048)
    return TestClient(create_app(lambda: service))


def test_streams_sse_events_in_order(retriever):
    client = client_for(retriever, ScriptedLlm(["Ninety ", "days [1]."]))
    with client.stream("POST", "/v1/answers", json={"question": "How often?"}, headers=CONTEXT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(parse_sse(response.iter_lines()))
    assert [name for name, _ in events] == ["token", "token", "citations", "done"]
    assert events[2][1]["citations"][0]["document_id"] == "doc1"
    assert events[3][1]["usage"]["completion_tokens"] == 2
    principal = retriever.calls[0][0]
    assert principal.user_id == "alice" and principal.groups == {"eng", "ops"}


def test_json_body_when_asked(retriever):
    client = client_for(retriever, ScriptedLlm(["Ninety ", "days."]))
    response = client.post(
        "/v1/answers", json={"question": "q"}, headers={**CONTEXT, "accept": "application/json"}
    )
    assert response.status_code == 200
    body = response.json()
    assert (
        body["answer"] == "Ninety days." and len(body["citations"]) == 2 and body["finish_reason"] == "stop"
    )


def test_missing_request_context_is_401(retriever):
    response = client_for(retriever, ScriptedLlm([])).post("/v1/answers", json={"question": "q"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "body", [{}, {"question": ""}, {"question": "q", "top_k": 0}, {"question": "q", "x": 1}]
)
def test_invalid_body_is_422_with_details(retriever, body):
    response = client_for(retriever, ScriptedLlm([])).post("/v1/answers", json=body, headers=CONTEXT)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["details"]


def test_a_form_encoded_body_is_415(retriever):
    response = client_for(retriever, ScriptedLlm([])).post(
        "/v1/answers",
        content=b'{"question": "q"}',
        headers={**CONTEXT, "content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_model_failure_mid_stream_becomes_an_error_event(retriever):
    with client_for(retriever, ExplodingLlm()).stream(
        "POST", "/v1/answers", json={"question": "q"}, headers=CONTEXT
    ) as response:
        events = list(parse_sse(response.iter_lines()))
    assert events[-1][0] == "error" and events[-1][1]["code"] == "answer_failed"
