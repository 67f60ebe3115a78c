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
    EmbeddingClient,
    EndpointError,
    HttpEmbeddingTransport,
    HttpLlmTransport,
    LlmClient,
    LlmDelta,
    LlmDone,
    SageMakerEmbeddingTransport,
    SageMakerLlmTransport,
    embedding_client,
    llm_client,
)
from ragline.endpoints.llm import parse_stream
from ragline.settings import Settings

ENDPOINT = "ragline-test"
MESSAGES = [{"role": "user", "content": "Bonjour?"}]
# Multi-byte characters on purpose: cuts inside them must not corrupt the text.
TOKENS = ["Ça", " coûte", " 5\u00a0€", " 🙂", "\n- fin"]
DONE = {"type": "done", "finish_reason": "stop", "usage": {"prompt_tokens": 12, "completion_tokens": 5}}


def ndjson(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)


STREAM = ndjson(*({"type": "token", "text": t} for t in TOKENS), DONE)
EXPECTED = [*(LlmDelta(t) for t in TOKENS), LlmDone("stop", Usage(prompt_tokens=12, completion_tokens=5))]


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


def test_a_cut_anywhere_is_reassembled() -> None:
    for position in range(1, len(STREAM)):
        assert list(parse_stream([STREAM[:position], STREAM[position:]])) == EXPECTED, position


def test_one_byte_chunks_are_reassembled() -> None:
    assert list(parse_stream(cut(STREAM, 1))) == EXPECTED


def test_a_stream_without_done_is_incomplete() -> None:
    with pytest.raises(EndpointError) as raised:
        list(parse_stream([ndjson({"type": "token", "text": "a"})[:-3]]))
    assert (raised.value.code, raised.value.retryable) == ("bad_stream", False)

    with pytest.raises(EndpointError) as raised:
        list(parse_stream([ndjson({"type": "token", "text": "a"})]))
    assert (raised.value.code, raised.value.retryable) == ("stream_incomplete", True)


def test_an_error_line_raises_its_code() -> None:
    body = ndjson(
        {"type": "token", "text": "a"}, {"type": "error", "code": "generation_failed", "message": "x"}
    )
    events = parse_stream([body])
    assert next(events) == LlmDelta("a")
    with pytest.raises(EndpointError) as raised:
        next(events)
    assert raised.value.code == "generation_failed"


def test_unknown_event_types_and_blank_lines_are_skipped() -> None:
    body = b"\n" + ndjson({"type": "heartbeat"}, {"type": "token", "text": "a"}, DONE)
    assert [type(e) for e in parse_stream([body])] == [LlmDelta, LlmDone]


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
        "stop": ["\n\n"],
    }


def test_sagemaker_model_stream_error_mid_stream() -> None:
    wire = payload_part(ndjson({"type": "token", "text": "a"})) + stream_error(
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
            body = [{"PayloadPart": {"Bytes": b'{"type": "token", "te'}}, {kind: {"Message": "gone"}}]
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
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(
            200, content=iter(cut(STREAM, 3)), headers={"Content-Type": "application/x-ndjson"}
        )

    client = LlmClient(HttpLlmTransport(mock_http(handler), "http://llm:8082"))
    assert list(client.stream(MESSAGES, max_tokens=8)) == EXPECTED


def test_http_llm_error_status() -> None:
    response = httpx.Response(400, json={"error": {"code": "invalid_max_tokens", "message": "no"}})
    client = LlmClient(HttpLlmTransport(mock_http(lambda _: response), "http://llm"))
    with pytest.raises(EndpointError) as raised:
        list(client.stream(MESSAGES, max_tokens=0))
    assert (raised.value.code, raised.value.retryable) == ("invalid_max_tokens", False)


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
