"""The model servers with the real bundled models, over real HTTP, and the clients against them.

Each server is started once per module as `python sagemaker/<model>/serve.py --port <free port>`, exactly as
the local platform and the container start it."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragline.endpoints import (
    EmbeddingClient,
    EndpointError,
    HttpEmbeddingTransport,
    HttpLlmTransport,
    LlmClient,
    LlmDelta,
    LlmDone,
)
from ragline.local.harness import ModelServer

pytestmark = pytest.mark.models

JSON = {"Content-Type": "application/json"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def start_server(model: str, log: Path) -> Iterator[str]:
    with ModelServer(model, log) as server:
        yield server.url


@pytest.fixture(scope="module")
def model_embedding_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_server("embedding", tmp_path_factory.mktemp("embedding") / "server.log")


@pytest.fixture(scope="module")
def model_llm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_server("llm", tmp_path_factory.mktemp("llm") / "server.log")


@pytest.fixture(scope="module")
def model_http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


# --------------------------------------------------------------------------------------------
# Embedding server
# --------------------------------------------------------------------------------------------


def test_embeddings_are_normalised_and_meaningful(model_embedding_url: str, model_http: httpx.Client) -> None:
    texts = [
        "How do I reset my password?",
        "What are the steps to change my password?",
        "The recipe needs two cups of flour.",
    ]
    response = model_http.post(
        f"{model_embedding_url}/invocations", json={"inputs": texts, "normalize": True}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["dimension"] == 384
    assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert body["usage"]["tokens"] > len(texts)
    question, paraphrase, unrelated = body["embeddings"]
    assert all(len(v) == 384 for v in body["embeddings"])
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-4) for v in body["embeddings"])

    def cosine(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(question, paraphrase) > cosine(question, unrelated) + 0.3


def test_over_long_texts_are_truncated_when_asked(model_embedding_url: str, model_http: httpx.Client) -> None:
    response = model_http.post(
        f"{model_embedding_url}/invocations", json={"inputs": ["word " * 2000], "truncate": True}
    )
    assert response.status_code == 200
    assert response.json()["usage"]["tokens"] == 256  # max_seq_length of all-MiniLM-L6-v2


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"inputs": []}, 400, "empty_inputs"),
        ({"inputs": ["ok", ""]}, 400, "empty_input"),
        ({"inputs": ["ok", 3]}, 400, "invalid_input"),
        ({"inputs": ["x"] * 257}, 413, "too_many_inputs"),
        ({"inputs": "not a list"}, 400, "invalid_request"),
        ({"inputs": ["x"], "extra": 1}, 400, "invalid_request"),
    ],
)
def test_embedding_validation(
    model_embedding_url: str, model_http: httpx.Client, body: dict[str, object], status: int, code: str
) -> None:
    response = model_http.post(f"{model_embedding_url}/invocations", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_embedding_rejects_bodies_that_are_not_json(
    model_embedding_url: str, model_http: httpx.Client
) -> None:
    response = model_http.post(f"{model_embedding_url}/invocations", content=b"{", headers=JSON)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_json")


def test_embedding_client_against_the_server(model_embedding_url: str, model_http: httpx.Client) -> None:
    client = EmbeddingClient(
        HttpEmbeddingTransport(model_http, model_embedding_url), max_batch=4, dimension=384
    )
    texts = [f"sentence number {i}" for i in range(10)]

    vectors = client.embed(texts)

    assert len(vectors) == 10
    single = client.embed([texts[7]])[0]
    assert math.isclose(math.fsum(x * y for x, y in zip(vectors[7], single, strict=True)), 1.0, rel_tol=1e-3)
    with pytest.raises(EndpointError) as raised:
        client.embed(["fine", " "])
    assert (raised.value.code, raised.value.retryable, raised.value.status) == ("empty_input", False, 400)


def test_a_query_longer_than_the_model_is_embedded_by_its_beginning_when_asked(
    model_embedding_url: str, model_http: httpx.Client
) -> None:
    """What search and indexing send (truncate): a 2,000-character query, the API's longest, is more
    than MiniLM's 256 tokens; refused, it would fail the search instead of finding anything."""
    long_query = "How does sustained aerobic exercise change mitochondrial density in muscle? " * 27
    strict = EmbeddingClient(HttpEmbeddingTransport(model_http, model_embedding_url), dimension=384)
    with pytest.raises(EndpointError) as raised:
        strict.embed([long_query])
    assert (raised.value.code, raised.value.retryable) == ("input_too_long", False)

    lenient = EmbeddingClient(
        HttpEmbeddingTransport(model_http, model_embedding_url), dimension=384, truncate=True
    )
    [vector] = lenient.embed([long_query])
    [beginning] = lenient.embed([long_query[:600]])
    assert math.fsum(x * y for x, y in zip(vector, beginning, strict=True)) > 0.9


# --------------------------------------------------------------------------------------------
# LLM server
# --------------------------------------------------------------------------------------------


def stream_events(http: httpx.Client, url: str, body: dict[str, object]) -> list[dict[str, object] | str]:
    """The SSE `data:` payloads, decoded; `[DONE]` stays a string."""
    with http.stream("POST", f"{url}/invocations", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def test_llm_streams_chat_completion_chunks_then_usage_then_done(
    model_llm_url: str, model_http: httpx.Client
) -> None:
    body = {"messages": QUESTION, "max_tokens": 32, "stream": True, "stream_options": {"include_usage": True}}
    *chunks, usage_chunk, done = stream_events(model_http, model_llm_url, body)

    assert done == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in [*chunks, usage_chunk])
    assert len({c["id"] for c in [*chunks, usage_chunk]}) == 1
    first, *tokens, finish = [c["choices"][0] for c in chunks]
    assert first["delta"]["role"] == "assistant"
    assert len(tokens) >= 3 and all(t["delta"]["content"] and t["finish_reason"] is None for t in tokens)
    assert finish["finish_reason"] in {"stop", "length"} and finish["delta"] == {}
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["prompt_tokens"] > 10
    assert len(tokens) <= usage["completion_tokens"] <= 32
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_llm_sends_usage_only_when_asked(model_llm_url: str, model_http: httpx.Client) -> None:
    events = stream_events(model_http, model_llm_url, {"messages": QUESTION, "max_tokens": 4, "stream": True})
    assert events[-1] == "[DONE]"
    assert not any("usage" in e for e in events[:-1])


def test_llm_max_tokens_ends_with_length(model_llm_url: str, model_http: httpx.Client) -> None:
    body = {"messages": QUESTION, "max_tokens": 5, "stream": False, "model": "ignored"}
    response = model_http.post(f"{model_llm_url}/invocations", json=body)

    assert response.status_code == 200
    result = response.json()
    assert result["object"] == "chat.completion"
    (choice,) = result["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert 0 < result["usage"]["completion_tokens"] <= 5


@pytest.mark.parametrize("stop", [["4"], "4"])
def test_llm_stop_sequences_cut_the_text(model_llm_url: str, model_http: httpx.Client, stop: object) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    body = {"messages": messages, "max_tokens": 40, "stop": stop}
    (choice,) = model_http.post(f"{model_llm_url}/invocations", json=body).json()["choices"]

    assert choice["finish_reason"] == "stop"
    assert "4" not in choice["message"]["content"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"messages": []}, "empty_messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "invalid_role"),
        ({"messages": [{"role": "user"}]}, "invalid_message"),
        ({"messages": QUESTION, "max_tokens": 0}, "invalid_max_tokens"),
        ({"messages": QUESTION, "max_tokens": 4097}, "invalid_max_tokens"),
        ({"messages": QUESTION, "temperature": -1}, "invalid_temperature"),
        ({"messages": QUESTION, "stop": [""]}, "invalid_stop"),
        ({"messages": QUESTION, "stream_options": {"include_usage": "yes"}}, "invalid_stream_options"),
        ({"messages": QUESTION, "stream_options": {"continuous": True}}, "invalid_stream_options"),
        ({"messages": QUESTION, "model": 3}, "invalid_request"),
        ({"messages": QUESTION, "top_k": 3}, "invalid_request"),
        ({"messages": [{"role": "user", "content": "word " * 2100}]}, "prompt_too_long"),
    ],
)
def test_llm_validation(
    model_llm_url: str, model_http: httpx.Client, body: dict[str, object], code: str
) -> None:
    response = model_http.post(f"{model_llm_url}/invocations", json={"stream": True, **body})
    assert (response.status_code, response.json()["error"]["code"]) == (400, code)


def test_llm_client_against_the_server(model_llm_url: str, model_http: httpx.Client) -> None:
    client = LlmClient(HttpLlmTransport(model_http, model_llm_url))

    events = list(client.stream(QUESTION, max_tokens=12))

    *deltas, done = events
    assert deltas and all(isinstance(d, LlmDelta) for d in deltas)
    assert isinstance(done, LlmDone)
    assert not done.usage_estimated  # the client asks for usage and the server sends it
    assert len(deltas) <= done.usage.completion_tokens <= 12 and done.usage.prompt_tokens > 0
    with pytest.raises(EndpointError) as raised:
        list(client.stream([{"role": "robot", "content": "x"}], max_tokens=4))
    assert (raised.value.code, raised.value.retryable) == ("invalid_role", False)


def test_a_client_that_goes_away_frees_the_model(model_llm_url: str, model_http: httpx.Client) -> None:
    client = LlmClient(HttpLlmTransport(model_http, model_llm_url))
    story = [{"role": "user", "content": "Write a very long story about a lighthouse."}]

    events = client.stream(story, max_tokens=2000, temperature=0.8)
    next(events)
    events.close()

    started = time.monotonic()
    done = list(client.stream(QUESTION, max_tokens=3))[-1]
    assert isinstance(done, LlmDone)
    assert time.monotonic() - started < 5  # not queued behind the abandoned 2000-token generation
