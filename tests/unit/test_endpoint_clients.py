"""The model endpoint clients against stubbed SageMaker Runtime and mocked HTTP (no network, no models)."""

from __future__ import annotations

import binascii
import io
import json
import struct
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from botocore.stub import Stubber

from ragline.contracts import Usage
from ragline.endpoints import (
    BreakerConfig,
    CircuitBreaker,
    EmbeddingClient,
    EndpointError,
    HttpEmbeddingTransport,
    HttpLlmTransport,
    LlmClient,
    LlmDelta,
    LlmDone,
    SageMakerEmbeddingTransport,
    SageMakerLlmTransport,
    State,
    embedding_client,
    llm_client,
)
from ragline.endpoints.llm import parse_stream
from ragline.settings import Settings

ENDPOINT = "ragline-test"
MESSAGES = [{"role": "user", "content": "Bonjour?"}]
# Multi-byte characters on purpose: cuts inside them must not corrupt the text.
TOKENS = ["Ça", " coûte", " 5\u00a0€", " 🙂", "\n- fin"]
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def chunk(delta: dict[str, str] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One chat.completion.chunk, as vLLM, TGI, LMI and sagemaker/llm/serve.py send them."""
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [choice],
    } | extra


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def jsonl(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)


def token_chunks() -> list[dict[str, Any]]:
    return [chunk({"role": "assistant", "content": ""}), *(chunk({"content": t}) for t in TOKENS)]


# The same answer in each shape a server may stream it.
STREAMS = {
    # vLLM (and LMI in vLLM async mode behind /v1/chat/completions), this project's server, OpenAI: SSE, the
    # usage in a last chunk without choices (stream_options.include_usage), then [DONE].
    "vllm": sse(*token_chunks(), chunk(finish="stop"), chunk() | {"choices": [], "usage": USAGE}),
    # TGI: SSE with keep-alive comments, the usage in the finishing chunk, its own finish_reason word.
    "tgi": sse(*token_chunks()[:3], done=False)
    + b":\n\n"
    + sse(*token_chunks()[3:], chunk(finish="eos_token", usage=USAGE)),
    # LMI (DJL Serving) on /invocations: JSON Lines, an empty line where vLLM's [DONE] was.
    "lmi": jsonl(*token_chunks(), chunk(finish="stop"), chunk() | {"choices": [], "usage": USAGE}) + b"\n",
}
EXPECTED = [*(LlmDelta(t) for t in TOKENS), LlmDone("stop", Usage(prompt_tokens=12, completion_tokens=5))]
STREAM = STREAMS["vllm"]


def runtime_client() -> Any:
    return boto3.client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class RecordingTransport:
    """Answers each text with [its position in the whole input], so order is checkable."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def invoke(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.batches.append(payload["inputs"])
        return {"embeddings": [[float(t.split()[1])] for t in payload["inputs"]], "dimension": 1}


def test_embed_splits_into_batches_and_keeps_order() -> None:
    transport = RecordingTransport()
    texts = [f"text {i}" for i in range(70)]

    vectors = EmbeddingClient(transport, max_batch=32).embed(texts)

    assert [len(b) for b in transport.batches] == [32, 32, 6]
    assert vectors == [[float(i)] for i in range(70)]


def test_embed_nothing_calls_nothing() -> None:
    transport = RecordingTransport()
    assert EmbeddingClient(transport).embed([]) == []
    assert transport.batches == []


def test_sagemaker_embedding_transport_sends_the_documented_request() -> None:
    client = runtime_client()
    body = json.dumps({"embeddings": [[0.6, 0.8], [1.0, 0.0]], "model": "m", "dimension": 2, "usage": {}})
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(body.encode()), len(body)), "ContentType": "application/json"},
            {
                "EndpointName": ENDPOINT,
                "Body": json.dumps({"inputs": ["a", "b"], "normalize": True}),
                "ContentType": "application/json",
                "Accept": "application/json",
            },
        )
        vectors = EmbeddingClient(SageMakerEmbeddingTransport(client, ENDPOINT), dimension=2).embed(
            ["a", "b"]
        )
        stub.assert_no_pending_responses()
    assert vectors == [[0.6, 0.8], [1.0, 0.0]]


def test_a_count_mismatch_is_an_error() -> None:
    client = runtime_client()
    body = json.dumps({"embeddings": [[1.0]]})
    with Stubber(client) as stub:
        stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(body.encode()), len(body))})
        with pytest.raises(EndpointError) as raised:
            EmbeddingClient(SageMakerEmbeddingTransport(client, ENDPOINT)).embed(["a", "b"])
    assert raised.value.code == "count_mismatch"
    assert not raised.value.retryable


@pytest.mark.parametrize(
    ("error_code", "http_status", "fields", "code", "retryable"),
    [
        # The container's own 4xx comes back as ModelError carrying its status and body.
        (
            "ModelError",
            424,
            {
                "OriginalStatusCode": 400,
                "OriginalMessage": '{"error": {"code": "empty_input", "message": "inputs[0] is empty"}}',
            },
            "empty_input",
            False,
        ),
        ("ModelError", 424, {"OriginalStatusCode": 500, "OriginalMessage": "boom"}, "http_500", True),
        ("ValidationError", 400, {}, "ValidationError", False),
        ("ServiceUnavailable", 503, {}, "ServiceUnavailable", True),
        ("ModelNotReadyException", 429, {}, "ModelNotReadyException", True),
    ],
)
def test_sagemaker_errors_are_classified(
    error_code: str, http_status: int, fields: dict[str, Any], code: str, retryable: bool
) -> None:
    client = runtime_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint",
            service_error_code=error_code,
            service_message="failed",
            http_status_code=http_status,
            modeled_fields=fields,
        )
        with pytest.raises(EndpointError) as raised:
            EmbeddingClient(SageMakerEmbeddingTransport(client, ENDPOINT)).embed(["a"])
    assert (raised.value.code, raised.value.retryable) == (code, retryable)


def mock_http(handler: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_http_embedding_transport() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "http://model:8081/invocations"
        assert json.loads(request.content) == {"inputs": ["x"], "normalize": True}
        return httpx.Response(200, json={"embeddings": [[1.0, 0.0]], "model": "m", "dimension": 2})

    client = EmbeddingClient(HttpEmbeddingTransport(mock_http(handler), "http://model:8081/"))
    assert client.embed(["x"]) == [[1.0, 0.0]]


@pytest.mark.parametrize(
    ("response", "code", "retryable"),
    [
        (
            httpx.Response(400, json={"error": {"code": "too_many_inputs", "message": "no"}}),
            "too_many_inputs",
            False,
        ),
        (httpx.Response(503, text="<html>bad gateway</html>"), "http_503", True),
        (httpx.Response(200, text="not json"), "bad_response", False),
        (httpx.Response(200, json={"embeddings": [[1.0, 2.0, 3.0]]}), "dimension_mismatch", False),
    ],
)
def test_http_embedding_errors(response: httpx.Response, code: str, retryable: bool) -> None:
    client = EmbeddingClient(HttpEmbeddingTransport(mock_http(lambda _: response), "http://m"), dimension=2)
    with pytest.raises(EndpointError) as raised:
        client.embed(["x"])
    assert (raised.value.code, raised.value.retryable) == (code, retryable)


def test_http_timeouts_are_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(EndpointError) as raised:
        EmbeddingClient(HttpEmbeddingTransport(mock_http(handler), "http://m")).embed(["x"])
    assert (raised.value.code, raised.value.retryable) == ("endpoint_timeout", True)


# --------------------------------------------------------------------------------------------
# LLM stream parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", sorted(STREAMS))
def test_a_cut_anywhere_is_reassembled(server: str) -> None:
    stream = STREAMS[server]
    for position in range(1, len(stream)):
        assert list(parse_stream([stream[:position], stream[position:]])) == EXPECTED, position


@pytest.mark.parametrize("server", sorted(STREAMS))
def test_one_byte_chunks_are_reassembled(server: str) -> None:
    assert list(parse_stream(cut(STREAMS[server], 1))) == EXPECTED


def test_crlf_line_ends_and_other_sse_fields_are_understood() -> None:
    body = STREAM.replace(b"\n", b"\r\n").replace(
        b"data: [DONE]", b"event: end\r\nid: 7\r\nretry: 10\r\ndata: [DONE]"
    )
    assert list(parse_stream(cut(body, 5))) == EXPECTED


def test_without_usage_from_the_server_it_is_estimated_and_said_so() -> None:
    # LMI's rolling-batch chat stream: JSON Lines, no usage, no [DONE], LMI's own finish_reason word.
    body = jsonl(*token_chunks(), chunk(finish="length"))

    *deltas, done = parse_stream(cut(body, 9), prompt_tokens=40)

    assert "".join(d.text for d in deltas) == "".join(TOKENS)
    assert done == LlmDone(
        "length", Usage(prompt_tokens=40, completion_tokens=len(TOKENS)), usage_estimated=True
    )


def test_finish_reasons_are_normalised_to_openais_words() -> None:
    for sent, expected in [("eos_token", "stop"), ("stop_sequence", "stop"), ("length", "length")]:
        done = list(parse_stream([sse(chunk({"content": "a"}), chunk(finish=sent))]))[-1]
        assert done.finish_reason == expected


def test_a_stream_that_ends_early_is_incomplete_and_retryable() -> None:
    for body in (
        sse(chunk({"content": "a"}), done=False),  # no finish_reason, no [DONE]
        sse(chunk({"content": "a"}), done=False)[:-10],  # cut inside the last line
    ):
        with pytest.raises(EndpointError) as raised:
            list(parse_stream([body]))
        assert (raised.value.code, raised.value.retryable) == ("stream_incomplete", True)


def test_a_malformed_line_is_a_bad_stream() -> None:
    with pytest.raises(EndpointError) as raised:
        list(parse_stream([b"data: {not json}\n\n"]))
    assert (raised.value.code, raised.value.retryable) == ("bad_stream", False)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            {"error": {"code": "generation_failed", "message": "x", "type": "server_error"}},
            "generation_failed",
        ),
        (
            {"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}},
            "InternalServerError",
        ),
        ({"error": "Request failed during generation", "error_type": "generation"}, "generation"),
        (
            {"object": "error", "message": "engine dead", "type": "EngineDeadError", "code": 500},
            "EngineDeadError",
        ),
        (chunk(finish="error"), "generation_failed"),  # LMI rolling batch
    ],
)
def test_an_error_in_the_stream_raises_its_code_after_the_text_so_far(
    error: dict[str, Any], code: str
) -> None:
    events = parse_stream([sse(chunk({"content": "a"}), error)])
    assert next(events) == LlmDelta("a")
    with pytest.raises(EndpointError) as raised:
        next(events)
    assert (raised.value.code, raised.value.retryable) == (code, True)


def test_comments_blank_lines_and_other_choices_are_skipped() -> None:
    other = chunk({"content": "second choice"})
    other["choices"][0]["index"] = 1
    body = b"\n: keep-alive\n\n" + sse(other, chunk({"content": "a"}), chunk(finish="stop"))
    assert list(parse_stream([body])) == [
        LlmDelta("a"),
        LlmDone("stop", Usage(prompt_tokens=0, completion_tokens=1), True),
    ]


# --------------------------------------------------------------------------------------------
# LLM over SageMaker: a real sagemaker-runtime client parsing a real event stream
# --------------------------------------------------------------------------------------------


def eventstream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event stream message (prelude, string headers, payload, CRCs), as SageMaker sends it."""
    encoded = b"".join(
        struct.pack("B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


def payload_part(data: bytes) -> bytes:
    return eventstream_message(
        {":message-type": "event", ":event-type": "PayloadPart", ":content-type": "application/octet-stream"},
        data,
    )


def stream_error(kind: str, body: dict[str, str]) -> bytes:
    return eventstream_message(
        {":message-type": "exception", ":exception-type": kind, ":content-type": "application/json"},
        json.dumps(body).encode(),
    )


class RawStream:
    """What botocore reads an event stream from (urllib3's response.stream())."""

    def __init__(self, data: bytes, read_size: int) -> None:
        self.data, self.read_size, self.closed = data, read_size, False

    def stream(self) -> Iterator[bytes]:
        yield from cut(self.data, self.read_size)

    def close(self) -> None:
        self.closed = True


def streaming_runtime(wire: bytes, *, read_size: int = 7) -> tuple[Any, list[dict[str, Any]]]:
    """A sagemaker-runtime client whose InvokeEndpointWithResponseStream answers `wire` without a network."""
    client = runtime_client()
    sent: list[dict[str, Any]] = []

    def respond(request: Any, **_: Any) -> AWSResponse:
        sent.append({"body": json.loads(request.body), "headers": dict(request.headers)})
        headers = {"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "r"}
        return AWSResponse(request.url, 200, headers, RawStream(wire, read_size))

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpointWithResponseStream", respond)
    return client, sent


def test_sagemaker_llm_stream_reassembles_payload_parts_cut_mid_character() -> None:
    # The same request, and these bytes, reach any container behind the endpoint: ours, LMI or TGI.
    euro = STREAM.index("€".encode())  # three bytes: cut after the first and after the second
    cuts = sorted({0, 5, STREAM.index(b"\n") + 1, euro + 1, euro + 2, len(STREAM) - 3, len(STREAM)})
    parts = [STREAM[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    assert "€".encode()[1:2] in parts
    client, sent = streaming_runtime(b"".join(payload_part(p) for p in parts))

    events = list(
        LlmClient(SageMakerLlmTransport(client, ENDPOINT)).stream(MESSAGES, max_tokens=16, stop=["\n\n"])
    )

    assert events == EXPECTED
    assert sent[0]["body"] == {
        "messages": MESSAGES,
        "max_tokens": 16,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["\n\n"],
    }
    assert "Accept" not in sent[0]["headers"]  # the body asks for the stream, whichever container reads it


def test_sagemaker_model_stream_error_mid_stream() -> None:
    wire = payload_part(sse(chunk({"content": "a"}), done=False)) + stream_error(
        "ModelStreamError", {"Message": "container died", "ErrorCode": "ModelStreamError"}
    )
    client, _ = streaming_runtime(wire)
    events = LlmClient(SageMakerLlmTransport(client, ENDPOINT)).stream(MESSAGES, max_tokens=4)

    assert next(events) == LlmDelta("a")
    with pytest.raises(EndpointError) as raised:
        next(events)
    assert (raised.value.code, raised.value.retryable) == ("ModelStreamError", True)


@pytest.mark.parametrize("kind", ["ModelStreamError", "InternalStreamFailure"])
def test_error_events_in_a_body_of_dicts(kind: str) -> None:
    class Runtime:
        def invoke_endpoint_with_response_stream(self, **_: Any) -> dict[str, Any]:
            body = [
                {"PayloadPart": {"Bytes": b'data: {"choices": [{"delta": {"cont'}},
                {kind: {"Message": "gone"}},
            ]
            return {"Body": iter(body)}

    with pytest.raises(EndpointError) as raised:
        list(LlmClient(SageMakerLlmTransport(Runtime(), ENDPOINT)).stream(MESSAGES, max_tokens=4))
    assert (raised.value.code, raised.value.retryable) == (kind, True)


def test_sagemaker_llm_request_errors_are_classified() -> None:
    client = runtime_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint_with_response_stream",
            service_error_code="ModelError",
            http_status_code=424,
            modeled_fields={
                "OriginalStatusCode": 400,
                "OriginalMessage": '{"error": {"code": "invalid_role", "message": "bad role"}}',
            },
        )
        with pytest.raises(EndpointError) as raised:
            list(LlmClient(SageMakerLlmTransport(client, ENDPOINT)).stream(MESSAGES, max_tokens=4))
    assert (raised.value.code, raised.value.retryable, raised.value.status) == ("invalid_role", False, 400)


# --------------------------------------------------------------------------------------------
# LLM over HTTP
# --------------------------------------------------------------------------------------------


def test_http_llm_stream() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "http://llm:8082/invocations"
        assert request.headers["Accept"] == "text/event-stream"
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(
            200, content=iter(cut(STREAM, 3)), headers={"Content-Type": "text/event-stream"}
        )

    client = LlmClient(HttpLlmTransport(mock_http(handler), "http://llm:8082"))
    assert list(client.stream(MESSAGES, max_tokens=8)) == EXPECTED


def test_http_llm_error_status() -> None:
    response = httpx.Response(400, json={"error": {"code": "invalid_max_tokens", "message": "no"}})
    client = LlmClient(HttpLlmTransport(mock_http(lambda _: response), "http://llm"))
    with pytest.raises(EndpointError) as raised:
        list(client.stream(MESSAGES, max_tokens=0))
    assert (raised.value.code, raised.value.retryable) == ("invalid_max_tokens", False)


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (
            422,
            {"error": "Input validation error: `inputs` too long", "error_type": "validation"},
            "validation",
            False,
        ),
        (429, {"error": "Model is overloaded", "error_type": "overloaded"}, "overloaded", True),  # TGI
        (
            400,
            {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400},
            "BadRequestError",
            False,
        ),
        (
            500,
            {"error": {"message": "dead", "type": "InternalServerError", "param": None, "code": 500}},
            "InternalServerError",
            True,
        ),
        (
            424,
            {"code": 424, "message": "Input parsing failed"},
            "http_424",
            False,
        ),  # LMI: kept whole as the message
    ],
)
def test_the_big_model_containers_error_bodies_are_read(
    status: int, body: dict[str, Any], code: str, retryable: bool
) -> None:
    response = httpx.Response(status, json=body)
    client = LlmClient(HttpLlmTransport(mock_http(lambda _: response), "http://llm"))
    with pytest.raises(EndpointError) as raised:
        list(client.stream(MESSAGES, max_tokens=4))
    assert (raised.value.code, raised.value.retryable, raised.value.status) == (code, retryable, status)
    assert raised.value.message


def test_stopping_early_closes_the_transport() -> None:
    closed: list[bool] = []

    class Transport:
        def stream(self, payload: dict[str, Any]) -> Iterator[bytes]:
            try:
                yield from cut(STREAM, 4)
            finally:
                closed.append(True)

    events = LlmClient(Transport()).stream(MESSAGES, max_tokens=8)
    assert next(events) == LlmDelta(TOKENS[0])
    events.close()
    assert closed == [True]


# --------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------


def test_factories_choose_the_transport_from_settings() -> None:
    http = mock_http(lambda _: httpx.Response(200, json={"embeddings": [[0.0] * 384]}))
    local = Settings(
        embedding_backend="http", embedding_endpoint="http://e", llm_backend="http", llm_endpoint="u"
    )
    assert embedding_client(local, http=http).embed(["x"]) == [[0.0] * 384]
    assert isinstance(llm_client(local, http=http)._transport, HttpLlmTransport)

    aws = Settings(embedding_backend="sagemaker", llm_backend="sagemaker")
    runtime = runtime_client()
    assert isinstance(embedding_client(aws, runtime_client=runtime)._transport, SageMakerEmbeddingTransport)
    assert isinstance(llm_client(aws, runtime_client=runtime)._transport, SageMakerLlmTransport)


def test_factories_give_each_endpoint_its_own_breaker_from_settings() -> None:
    settings = Settings(
        embedding_backend="http",
        embedding_endpoint="http://e",
        llm_backend="http",
        llm_endpoint="http://primary",
        llm_secondary_endpoint="http://secondary",
        breaker_minimum_calls=3,
        breaker_open_s=7,
    )
    http = mock_http(lambda _: httpx.Response(503))
    embedding = embedding_client(settings, http=http).breaker
    primary = llm_client(settings, http=http).breaker
    secondary = llm_client(settings, http=http, endpoint=settings.llm_secondary_endpoint).breaker

    assert [b.name for b in (embedding, primary, secondary)] == [
        "http://e",
        "http://primary",
        "http://secondary",
    ]
    assert len({id(embedding), id(primary), id(secondary)}) == 3
    assert primary.config == BreakerConfig(failure_rate=0.5, minimum_calls=3, window_s=60, open_s=7)


# --------------------------------------------------------------------------------------------
# Circuit breakers around the clients
# --------------------------------------------------------------------------------------------

QUICK = BreakerConfig(failure_rate=0.5, minimum_calls=2, window_s=60, open_s=30)


def counting_http(response: httpx.Response) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    return mock_http(handler), seen


def quiet_breaker() -> CircuitBreaker:
    return CircuitBreaker("test", QUICK, on_transition=None)


def test_an_open_embedding_circuit_fails_fast_without_a_request() -> None:
    http, seen = counting_http(httpx.Response(503, text="overloaded"))
    client = EmbeddingClient(HttpEmbeddingTransport(http, "http://m"), breaker=quiet_breaker())
    for _ in range(QUICK.minimum_calls):
        with pytest.raises(EndpointError, match="http_503"):
            client.embed(["x"])

    with pytest.raises(EndpointError) as raised:
        client.embed(["x"])
    assert (raised.value.code, raised.value.retryable) == ("circuit_open", True)
    assert len(seen) == QUICK.minimum_calls


def test_client_errors_never_open_the_circuit() -> None:
    http, seen = counting_http(httpx.Response(400, json={"error": {"code": "empty_input", "message": "no"}}))
    client = EmbeddingClient(HttpEmbeddingTransport(http, "http://m"), breaker=quiet_breaker())
    for _ in range(10):
        with pytest.raises(EndpointError, match="empty_input"):
            client.embed([""])
    assert len(seen) == 10 and client.breaker.state is State.CLOSED


def test_an_llm_stream_that_breaks_counts_and_opens_the_circuit() -> None:
    http, seen = counting_http(httpx.Response(200, content=sse(chunk({"content": "a"}), done=False)))
    client = LlmClient(HttpLlmTransport(http, "http://llm"), breaker=quiet_breaker())
    for _ in range(QUICK.minimum_calls):
        with pytest.raises(EndpointError, match="stream_incomplete"):
            list(client.stream(MESSAGES, max_tokens=4))

    events = client.stream(MESSAGES, max_tokens=4)
    with pytest.raises(EndpointError) as raised:
        next(events)
    assert raised.value.code == "circuit_open"
    assert len(seen) == QUICK.minimum_calls


def test_a_healthy_llm_stream_keeps_the_circuit_closed() -> None:
    http, _ = counting_http(httpx.Response(200, content=STREAM))
    client = LlmClient(HttpLlmTransport(http, "http://llm"), breaker=quiet_breaker())
    for _ in range(5):
        assert list(client.stream(MESSAGES, max_tokens=8)) == EXPECTED
    assert client.breaker.stats().calls == 5 and client.breaker.stats().failures == 0
