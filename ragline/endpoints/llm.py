"""Client for the LLM endpoint (wire format: sagemaker/llm/README.md).

The server streams NDJSON: one JSON event a line. A transport only moves bytes (SageMaker's
InvokeEndpointWithResponseStream PayloadParts, or an HTTP chunked body), and either may cut a line, or a
multi-byte UTF-8 character, anywhere; `parse_stream` is the one place that reassembles and decodes lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from ragline.contracts import Usage
from ragline.endpoints.errors import EndpointError, from_botocore, from_client_error, from_httpx, from_status
from ragline.endpoints.wiring import http_client_for, runtime_client_for
from ragline.settings import Settings

JSON = "application/json"
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class LlmDelta:
    text: str


@dataclass(frozen=True)
class LlmDone:
    finish_reason: str
    usage: Usage


LlmEvent = LlmDelta | LlmDone


class LlmTransport(Protocol):
    def stream(self, payload: dict[str, Any]) -> Iterator[bytes]:
        """POST one request body, yield the streamed response body in chunks; raise EndpointError on failure.

        Closing the iterator early must close the connection (the server then stops generating)."""
        ...


# --------------------------------------------------------------------------------------------
# The stream format
# --------------------------------------------------------------------------------------------


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Complete lines from arbitrarily cut chunks (bytes are split before decoding, so a cut inside a
    UTF-8 sequence is harmless). A last line without a newline is still a line."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from lines
    if buffer:
        yield buffer


def parse_event(line: bytes) -> LlmEvent | None:
    """One NDJSON line; None for blank lines and event types this client does not know (forward compatible)."""
    if not line.strip():
        return None
    try:
        event = json.loads(line)
        kind = event["type"]
        if kind == "token":
            return LlmDelta(str(event["text"]))
        if kind == "done":
            return LlmDone(str(event["finish_reason"]), Usage.model_validate(event["usage"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise EndpointError(
            "bad_stream", f"Malformed stream line {line[:200]!r}: {exc}", retryable=False
        ) from exc
    if kind == "error":
        raise EndpointError(
            str(event.get("code", "generation_failed")), str(event.get("message", "")), retryable=True
        )
    return None


def parse_stream(chunks: Iterable[bytes]) -> Iterator[LlmEvent]:
    """Deltas, then exactly one LlmDone. A stream that ends before `done` is an error (retryable)."""
    lines = iter_lines(chunks)
    try:
        for line in lines:
            event = parse_event(line)
            if event is not None:
                yield event
            if isinstance(event, LlmDone):
                return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    raise EndpointError("stream_incomplete", "The stream ended before its `done` event", retryable=True)


# --------------------------------------------------------------------------------------------
# Transports
# --------------------------------------------------------------------------------------------


class SageMakerLlmTransport:
    def __init__(self, runtime_client: Any, endpoint_name: str) -> None:
        self._runtime = runtime_client
        self._endpoint = endpoint_name

    def stream(self, payload: dict[str, Any]) -> Iterator[bytes]:
        try:
            response = self._runtime.invoke_endpoint_with_response_stream(
                EndpointName=self._endpoint, Body=json.dumps(payload), ContentType=JSON, Accept=NDJSON
            )
            body = response["Body"]
            try:
                for event in body:
                    yield _payload_bytes(event)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        except ClientError as exc:  # includes EventStreamError, raised for error events mid-stream
            raise from_client_error(exc) from exc
        except BotoCoreError as exc:
            raise from_botocore(exc) from exc


def _payload_bytes(event: dict[str, Any]) -> bytes:
    if "PayloadPart" in event:
        return bytes(event["PayloadPart"].get("Bytes", b""))
    for code in ("ModelStreamError", "InternalStreamFailure"):
        if code in event:
            detail = event[code]
            message = detail.get("Message", "")
            if error_code := detail.get("ErrorCode"):
                message = f"{error_code}: {message}"
            raise EndpointError(code, message, retryable=True)
    return b""


class HttpLlmTransport:
    def __init__(self, http: httpx.Client, base_url: str) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/invocations"

    def stream(self, payload: dict[str, Any]) -> Iterator[bytes]:
        try:
            with self._http.stream("POST", self._url, json=payload, headers={"Accept": NDJSON}) as response:
                if response.status_code >= 400:
                    raise from_status(response.status_code, response.read())
                yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise from_httpx(exc) from exc


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


class LlmClient:
    def __init__(self, transport: LlmTransport) -> None:
        self._transport = transport

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[LlmEvent]:
        """Deltas as the model produces them, then one LlmDone. Stop iterating (or close the iterator) to
        cancel: the connection is closed and the server stops generating."""
        payload: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        if stop:
            payload["stop"] = stop
        return parse_stream(self._transport.stream(payload))


def llm_client(
    settings: Settings, runtime_client: Any | None = None, http: httpx.Client | None = None
) -> LlmClient:
    """The client `settings.llm_backend` asks for: `llm_endpoint` is an endpoint name or a URL."""
    transport: LlmTransport
    if settings.llm_backend == "sagemaker":
        transport = SageMakerLlmTransport(
            runtime_client or runtime_client_for(settings), settings.llm_endpoint
        )
    else:
        transport = HttpLlmTransport(http or http_client_for(settings), settings.llm_endpoint)
    return LlmClient(transport)
