"""Fault tests of the answer flow: the LLM endpoint down, erroring, or cut mid-answer.

Everything between the answers app and the model server is the real code (the app, the answer service, the
endpoint adapter, the LLM client with its circuit breaker, httpx); the model server is either the real
`sagemaker/llm/serve.py` with SmolLM2, started and stopped as a process, or a real HTTP server on a local
port whose answers the test chooses (500s, 400s, a stream that breaks). Only retrieval is a fake."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from functions.context import wiring
from functions.context.adapters.llm import EndpointLlm
from functions.context.app import create_app
from ragline.endpoints import State
from ragline.endpoints.llm import llm_client
from ragline.local.harness import ModelServer, free_port
from ragline.settings import Settings
from tests.support.context_fakes import MemoryCache, MemoryConversations, RecordingRetriever, hit
from tests.support.sse import parse_sse

CONTEXT = {"x-amzn-request-context": json.dumps({"authorizer": {"claims": {"sub": "alice"}}})}
# Long enough that a busy machine cannot let it pass between two calls meant to see the circuit open.
OPEN_S = 2.0
HITS = [
    hit(1, text="Database credentials are rotated every ninety days by the platform team."),
    hit(2, text="Rotation is announced in the #ops channel a week ahead."),
]


def settings_for(
    url: str, *, open_s: float, secondary: str | None = None, minimum_calls: int = 2
) -> Settings:
    return Settings(
        llm_backend="http",
        llm_endpoint=url,
        llm_secondary_endpoint=secondary,
        breaker_failure_rate=0.5,
        breaker_minimum_calls=minimum_calls,
        breaker_window_s=60,
        breaker_open_s=open_s,
        endpoint_timeout_s=30,
    )


class Answers:
    """The answers app built by the context's own wiring around the real LLM client, asked over HTTP."""

    def __init__(self, settings: Settings) -> None:
        self.llm = llm_client(settings)
        service = wiring.build(
            settings,
            retriever=RecordingRetriever(HITS),
            llm=EndpointLlm(self.llm),
            conversations=MemoryConversations(),
            cache=MemoryCache(),
        )
        self._http = TestClient(create_app(lambda: service))

    def stream(self, max_tokens: int = 12) -> list[tuple[str, Any]]:
        body = {"question": "How often are credentials rotated?", "max_tokens": max_tokens}
        with self._http.stream("POST", "/v1/answers", json=body, headers=CONTEXT) as response:
            assert response.status_code == 200
            return list(parse_sse(response.iter_lines()))

    def json(self, max_tokens: int = 12) -> dict[str, Any]:
        body = {"question": "How often are credentials rotated?", "max_tokens": max_tokens}
        response = self._http.post(
            "/v1/answers", json=body, headers={**CONTEXT, "accept": "application/json"}
        )
        assert response.status_code == 200, response.text
        return response.json()


def assert_extractive(events: list[tuple[str, Any]]) -> None:
    names = [name for name, _ in events]
    assert names[-2:] == ["citations", "done"] and "error" not in names
    text = "".join(payload["text"] for name, payload in events if name == "token")
    cited = events[-2][1]["citations"]
    assert [c["document_id"] for c in cited] == ["doc1", "doc2"]
    for citation, source in zip(cited, HITS, strict=True):
        assert f"[{citation['marker']}] {source.title}" in text and source.text in text
    done = events[-1][1]
    assert (done["degraded"], done["degraded_reason"]) == (True, "extractive")


def assert_answered_by_the_model(events: list[tuple[str, Any]]) -> None:
    names = [name for name, _ in events]
    assert names[-2:] == ["citations", "done"] and names.count("token") >= 1
    done = events[-1][1]
    assert (done["degraded"], done["degraded_reason"]) == (False, None)
    assert done["finish_reason"] in {"stop", "length"} and done["usage"]["prompt_tokens"] > 0


def transitions(caplog: pytest.LogCaptureFixture, endpoint: str) -> list[str]:
    return [r.to_state for r in caplog.records if getattr(r, "endpoint", None) == endpoint]


# --------------------------------------------------------------------------------------------
# The real LLM server, as a process that can be stopped and started again on the same port
# --------------------------------------------------------------------------------------------


class LlmServer(ModelServer):
    def __init__(self, log: Path) -> None:
        super().__init__("llm", log)


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmServer]:
    server = LlmServer(tmp_path_factory.mktemp("llm") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.models
def test_llm_down_degrades_with_citations_and_recovery_closes_the_circuit(
    llm_server: LlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answers = Answers(settings_for(llm_server.url, open_s=OPEN_S))

    llm_server.stop()
    try:
        for _ in range(2):  # refused connections: retryable failures, 2 of 2 calls
            assert_extractive(answers.stream())
        assert answers.llm.breaker.state is State.OPEN
        opened = time.monotonic()
        body = answers.json()  # fails fast now, and is still an answer
        assert (body["degraded"], body["finish_reason"]) == (True, "extractive") and body["citations"]
    finally:
        llm_server.start()

    time.sleep(max(0.0, OPEN_S - (time.monotonic() - opened)))  # the cool-down
    assert_answered_by_the_model(answers.stream(max_tokens=4))  # the half-open probe succeeds...
    assert answers.llm.breaker.state is State.CLOSED  # ...and closes the circuit
    assert transitions(caplog, llm_server.url) == ["open", "half_open", "closed"]


@pytest.mark.models
def test_the_secondary_llm_answers_while_the_primary_is_down(llm_server: LlmServer) -> None:
    assert llm_server.running
    down = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(down, open_s=30, secondary=llm_server.url, minimum_calls=1)
    primary = llm_client(settings)
    service = wiring.build(
        settings,
        retriever=RecordingRetriever(HITS),
        llm=EndpointLlm(primary),
        conversations=MemoryConversations(),
        cache=MemoryCache(),
    )
    app = TestClient(create_app(lambda: service))

    for _ in range(2):  # the primary refuses, then its circuit is open
        with app.stream(
            "POST", "/v1/answers", json={"question": "How often?", "max_tokens": 2}, headers=CONTEXT
        ) as response:
            events = list(parse_sse(response.iter_lines()))
        names = [name for name, _ in events]
        assert names[-2:] == ["citations", "done"] and "token" in names
        done = events[-1][1]
        assert (done["degraded"], done["degraded_reason"]) == (True, "secondary_llm")
        assert done["usage"]["prompt_tokens"] > 0 and len(events[-2][1]["citations"]) == len(HITS)
        assert primary.breaker.state is State.OPEN


# --------------------------------------------------------------------------------------------
# A real HTTP server whose answers the test chooses
# --------------------------------------------------------------------------------------------


def sse_chunks(*texts: str, finish: str | None = "stop") -> bytes:
    def data(obj: object) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    body = b"".join(
        data({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}) for t in texts
    )
    if finish is not None:
        body += data({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        body += data({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": len(texts)}})
        body += b"data: [DONE]\n\n"
    return body


class ScriptedServer:
    """/invocations answers as `mode` says: "ok" streams a short answer, "500" and "400" fail with that
    status before streaming, "cut" streams two tokens and drops the connection. Requests are counted."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests += 1
                if server.mode in {"500", "400"}:
                    body = json.dumps(
                        {"error": {"code": f"scripted_{server.mode}", "message": "no"}}
                    ).encode()
                    self.send_response(int(server.mode))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                if server.mode == "ok":
                    self.wfile.write(sse_chunks("Every ", "ninety ", "days [1]."))
                else:
                    self.wfile.write(sse_chunks("Every ", "nine", finish=None))

            def log_message(self, *_: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._closed = False
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._httpd.shutdown()
            self._httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def test_5xx_open_the_circuit_calls_then_fail_fast_and_a_probe_closes_it(
    scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answers = Answers(settings_for(scripted.url, open_s=OPEN_S))
    scripted.mode = "500"
    for _ in range(2):
        assert_extractive(answers.stream())
    assert answers.llm.breaker.state is State.OPEN and scripted.requests == 2

    scripted.mode = "ok"  # the server is back, but the circuit is open: nobody asks it yet
    assert_extractive(answers.stream())
    assert scripted.requests == 2

    time.sleep(OPEN_S)
    events = answers.stream()
    assert_answered_by_the_model(events)
    assert "".join(p["text"] for n, p in events if n == "token") == "Every ninety days [1]."
    assert scripted.requests == 3 and answers.llm.breaker.state is State.CLOSED
    assert transitions(caplog, scripted.url) == ["open", "half_open", "closed"]


def test_4xx_degrade_the_answer_but_never_open_the_circuit(scripted: ScriptedServer) -> None:
    answers = Answers(settings_for(scripted.url, open_s=30))
    scripted.mode = "400"
    for _ in range(5):
        assert_extractive(answers.stream())
    assert scripted.requests == 5  # every answer asked the server: no fail-fast for the caller's faults
    assert answers.llm.breaker.state is State.CLOSED


def test_a_stream_cut_mid_answer_keeps_the_text_and_ends_interrupted(scripted: ScriptedServer) -> None:
    scripted.mode = "cut"
    events = Answers(settings_for(scripted.url, open_s=30)).stream()

    names = [name for name, _ in events]
    assert names == ["token", "token", "citations", "done"]
    assert "".join(p["text"] for n, p in events if n == "token") == "Every nine"
    assert len(events[-2][1]["citations"]) == len(HITS)
    done = events[-1][1]
    assert (done["degraded"], done["degraded_reason"], done["finish_reason"]) == (
        True,
        "interrupted",
        "interrupted",
    )


def test_a_refused_connection_degrades_and_counts(scripted: ScriptedServer) -> None:
    answers = Answers(settings_for(scripted.url, open_s=30))
    scripted.close()  # nothing listens on the port any more
    for _ in range(2):
        assert_extractive(answers.stream())
    assert answers.llm.breaker.state is State.OPEN
