"""The answers app as the Lambda Web Adapter drives it: claims in x-amzn-request-context, SSE by
default, one JSON body on Accept: application/json. The retriever and the model are fakes here;
the end-to-end test runs the real ones."""

import json
import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from functions.context.adapters.llm import EndpointLlm
from functions.context.app import create_app
from functions.context.domain.service import AnswerService
from ragline.endpoints import HttpLlmTransport, LlmClient
from tests.support.context_fakes import MemoryConversations, RecordingRetriever, ScriptedLlm, hit
from tests.support.sse import parse_sse

CLAIMS = {"sub": "alice", "cognito:groups": "eng,ops"}
CONTEXT = {"x-amzn-request-context": json.dumps({"authorizer": {"claims": CLAIMS}})}


class ExplodingLlm:
    def stream(self, messages, **kwargs):
        yield from ()
        raise RuntimeError("endpoint went away")


@pytest.fixture
def retriever():
    return RecordingRetriever([hit(1), hit(2, "Old keys stay valid for one hour after rotation.")])


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


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def unreachable_llm() -> EndpointLlm:
    """The real client and adapter, pointed at a port nothing listens on: connections are refused."""
    http = httpx.Client(timeout=5)
    return EndpointLlm(LlmClient(HttpLlmTransport(http, f"http://127.0.0.1:{closed_port()}")))


def test_an_unreachable_model_degrades_the_stream_instead_of_failing(retriever):
    with client_for(retriever, unreachable_llm()).stream(
        "POST", "/v1/answers", json={"question": "How often?"}, headers=CONTEXT
    ) as response:
        assert response.status_code == 200
        events = list(parse_sse(response.iter_lines()))

    names = [name for name, _ in events]
    assert names[-2:] == ["citations", "done"] and "error" not in names
    assert [c["document_id"] for c in events[-2][1]["citations"]] == ["doc1", "doc2"]
    assert events[-1][1]["degraded"] is True and events[-1][1]["degraded_reason"] == "extractive"
    assert "Rotate the keys every ninety days." in "".join(p["text"] for n, p in events if n == "token")


def test_the_json_answer_carries_the_degraded_flag(retriever):
    response = client_for(retriever, unreachable_llm()).post(
        "/v1/answers", json={"question": "q"}, headers={**CONTEXT, "accept": "application/json"}
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["degraded"], body["degraded_reason"], body["finish_reason"]) == (
        True,
        "extractive",
        "extractive",
    )
    assert [c["marker"] for c in body["citations"]] == [1, 2] and "[1] Runbook 1" in body["answer"]


def test_a_healthy_answer_says_it_is_not_degraded(retriever):
    body = (
        client_for(retriever, ScriptedLlm(["Ninety days."]))
        .post("/v1/answers", json={"question": "q"}, headers={**CONTEXT, "accept": "application/json"})
        .json()
    )
    assert (body["degraded"], body["degraded_reason"]) == (False, None)


BOB = {
    "x-amzn-request-context": json.dumps({"authorizer": {"claims": {"sub": "bob", "cognito:groups": "eng"}}})
}


def conversation_client(retriever, llm) -> TestClient:
    service = AnswerService(retriever, llm, context_window_tokens=2048, conversations=MemoryConversations())
    return TestClient(create_app(lambda: service))


def test_a_conversation_is_read_back_by_its_owner_only(retriever):
    client = conversation_client(retriever, ScriptedLlm(["Ninety ", "days [1]."]))
    answer = client.post(
        "/v1/answers", json={"question": "How often?"}, headers={**CONTEXT, "accept": "application/json"}
    ).json()
    conversation_id = answer["conversation_id"]

    mine = client.get(f"/v1/conversations/{conversation_id}", headers=CONTEXT)
    theirs = client.get(f"/v1/conversations/{conversation_id}", headers=BOB)

    assert mine.status_code == 200
    [turn] = mine.json()["turns"]
    assert turn["answer"] == "Ninety days [1]." and turn["citations"] == answer["citations"]
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "conversation_not_found"
    # Someone else's id cannot be continued either; the refusal comes before any stream starts.
    follow_up = client.post(
        "/v1/answers", json={"question": "And?", "conversation_id": conversation_id}, headers=BOB
    )
    assert follow_up.status_code == 404 and follow_up.json()["error"]["code"] == "conversation_not_found"


def test_a_full_conversation_is_409(retriever):
    service = AnswerService(
        retriever,
        ScriptedLlm(["ok"]),
        context_window_tokens=2048,
        conversations=MemoryConversations(),
        max_turns=1,
    )
    client = TestClient(create_app(lambda: service))
    json_answer = {**CONTEXT, "accept": "application/json"}
    conversation_id = client.post("/v1/answers", json={"question": "q"}, headers=json_answer).json()[
        "conversation_id"
    ]

    response = client.post(
        "/v1/answers", json={"question": "q2", "conversation_id": conversation_id}, headers=CONTEXT
    )

    assert response.status_code == 409 and response.json()["error"]["code"] == "conversation_full"


@pytest.mark.parametrize("conversation_id", ["../../etc/passwd", "not-an-id", "A" * 32])
def test_a_malformed_conversation_id_is_a_client_error(retriever, conversation_id):
    client = conversation_client(retriever, ScriptedLlm(["ok"]))
    response = client.get(f"/v1/conversations/{conversation_id}", headers=CONTEXT)
    assert 400 <= response.status_code < 500 and "error" in response.json()
