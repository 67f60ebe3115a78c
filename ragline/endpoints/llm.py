"""Client for the LLM endpoint (wire format: sagemaker/llm/README.md).

The request is an OpenAI-style chat completion with `"stream": true`. The response is a stream of
`chat.completion.chunk` objects, which the local server (sagemaker/llm/serve.py), Hugging Face TGI and vLLM
send as Server-Sent Events (`data: {...}` lines ending with `data: [DONE]`) and the LMI (DJL Serving)
container sends as JSON Lines: `parse_stream` reads both, so the context function does not care which
serves the endpoint. A transport only moves bytes (SageMaker's InvokeEndpointWithResponseStream
PayloadParts, or an HTTP chunked body), and either may cut a line, or a multi-byte UTF-8 character,
anywhere: lines are split on bytes and only whole lines are decoded."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from ragline.contracts import Usage
from ragline.endpoints.breaker import CircuitBreaker, breaker_for
from ragline.endpoints.errors import EndpointError, from_botocore, from_client_error, from_httpx, from_status
from ragline.endpoints.wiring import http_client_for, runtime_client_for
from ragline.settings import Settings

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
DONE_MARKER = b"[DONE]"
# LMI and TGI's own API name these differently from OpenAI; answers use OpenAI's words.
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "eos": "stop"}


@dataclass(frozen=True)
class LlmDelta:
    text: str


@dataclass(frozen=True)
class LlmDone:
    finish_reason: str
    usage: Usage
    usage_estimated: bool = False  # the server sent no usage: see parse_stream


LlmEvent = LlmDelta | LlmDone


class LlmTransport(Protocol):
    def stream(self, payload: dict[str, Any]) -> Iterator[bytes]:
        """POST one request body, yield the streamed response body in chunks; raise EndpointError on failure.

        Closing the iterator early must close the connection (the server then stops generating)."""
        ...


# --------------------------------------------------------------------------------------------
# The stream format
# --------------------------------------------------------------------------------------------


def iter_lines(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bool]]:
    """(line, complete) from arbitrarily cut chunks. Bytes are split before decoding, so a cut inside a UTF-8
    sequence is harmless; a last line without a newline is yielded as incomplete. CRLF ends a line too."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r"), True
    if buffer:
        yield buffer.removesuffix(b"\r"), False


def line_payload(line: bytes) -> bytes | None:
    """The JSON a line carries: SSE `data:` lines and bare JSON Lines do; blank lines, SSE comments (`:`
    keep-alives) and other SSE fields (`event:`, `id:`, `retry:`) do not."""
    line = line.strip()
    if not line or line.startswith(b":") or line.startswith((b"event:", b"id:", b"retry:")):
        return None
    return line[5:].strip() if line.startswith(b"data:") else line


def stream_error(chunk: dict[str, Any]) -> EndpointError | None:
    """A failure the server reports inside the stream, after its 200: `{"error": {"message", "type", "code"}}`
    (this project's server, vLLM), `{"error": "...", "error_type": "..."}` (TGI), `{"object": "error", ...}`
    (older vLLM). Generation failed on the server's side, so a later call may succeed."""
    error = chunk if chunk.get("object") == "error" else chunk.get("error")
    if error is None:
        return None
    if isinstance(error, dict):
        code = error.get("code")
        if not isinstance(code, str) or not code:
            code = error.get("type")
        message = error.get("message", "")
    else:
        code, message = chunk.get("error_type"), error
    return EndpointError(str(code or "generation_failed"), str(message), retryable=True)


def parse_chunk(payload: bytes, *, complete: bool = True) -> dict[str, Any]:
    try:
        chunk = json.loads(payload)
    except ValueError as exc:
        if not complete:  # the connection ended inside a line: a broken stream, not a bad one
            raise EndpointError(
                "stream_incomplete", "The stream ended inside a line", retryable=True
            ) from exc
        raise EndpointError(
            "bad_stream", f"Malformed stream line {payload[:200]!r}: {exc}", retryable=False
        ) from exc
    if not isinstance(chunk, dict):
        raise EndpointError("bad_stream", f"Stream line {payload[:200]!r} is not an object", retryable=False)
    if (error := stream_error(chunk)) is not None:
        raise error
    return chunk


def _usage(value: Any) -> Usage:
    try:
        return Usage(
            prompt_tokens=int(value["prompt_tokens"]), completion_tokens=int(value["completion_tokens"])
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise EndpointError("bad_stream", f"Malformed usage {value!r}", retryable=False) from exc


def _first_choice(chunk: dict[str, Any]) -> dict[str, Any] | None:
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise EndpointError("bad_stream", "`choices` is not a list", retryable=False)
    return next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)


def parse_stream(chunks: Iterable[bytes], *, prompt_tokens: int = 0) -> Iterator[LlmEvent]:
    """Deltas, then exactly one LlmDone once the stream has ended.

    A stream ends well at `[DONE]`, or at its end after a chunk carried a `finish_reason` (LMI sends no
    `[DONE]`); any other end is `stream_incomplete` (retryable). Usage is the server's when a chunk carries it
    (`stream_options.include_usage`: in its own last chunk for vLLM, in the finishing chunk for TGI);
    otherwise it is estimated: `prompt_tokens` as given, one completion token per content chunk (the servers
    send one token a chunk), and the LlmDone says so."""
    finish_reason: str | None = None
    usage: Usage | None = None
    deltas = 0
    ended = False
    try:
        for line, complete in iter_lines(chunks):
            payload = line_payload(line)
            if payload is None:
                continue
            if payload == DONE_MARKER:
                ended = True
                break
            chunk = parse_chunk(payload, complete=complete)
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            choice = _first_choice(chunk)
            if choice is None:
                continue
            text = (choice.get("delta") or {}).get("content")
            if text:
                if not isinstance(text, str):
                    raise EndpointError("bad_stream", "`delta.content` is not a string", retryable=False)
                deltas += 1
                yield LlmDelta(text)
            if reason := choice.get("finish_reason"):
                if reason == "error":  # LMI's rolling batch reports a failed generation this way
                    raise EndpointError(
                        "generation_failed", "The model failed mid-generation", retryable=True
                    )
                finish_reason = FINISH_REASONS.get(str(reason), str(reason))
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if finish_reason is None and not ended:
        raise EndpointError("stream_incomplete", "The stream ended before the answer did", retryable=True)
    yield LlmDone(
        finish_reason or "unknown",
        usage or Usage(prompt_tokens=prompt_tokens, completion_tokens=deltas),
        usage_estimated=usage is None,
    )


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """For servers that report no usage: English BPE averages about 4 characters a token."""
    return sum(len(m.get("content", "")) for m in messages) // 4 + 1


# --------------------------------------------------------------------------------------------
# Transports
# --------------------------------------------------------------------------------------------


class SageMakerLlmTransport:
    def __init__(self, runtime_client: Any, endpoint_name: str) -> None:
        self._runtime = runtime_client
        self._endpoint = endpoint_name

    def stream(self, payload: dict[str, Any]) -> Iterator[bytes]:
        try:
            # No Accept header: the body asks for a stream, and parse_stream reads every shape they come in.
            response = self._runtime.invoke_endpoint_with_response_stream(
                EndpointName=self._endpoint, Body=json.dumps(payload), ContentType=JSON
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
            with self._http.stream(
                "POST", self._url, json=payload, headers={"Accept": EVENT_STREAM}
            ) as response:
                if response.status_code >= 400:
                    raise from_status(response.status_code, response.read())
                yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise from_httpx(exc) from exc


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


class LlmClient:
    def __init__(self, transport: LlmTransport, *, breaker: CircuitBreaker | None = None) -> None:
        self._transport = transport
        self.breaker = breaker

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[LlmEvent]:
        """Deltas as the model produces them, then one LlmDone. Stop iterating (or close the iterator) to
        cancel: the connection is closed and the server stops generating. With a breaker, an open circuit
        fails at the first `next` with EndpointError("circuit_open")."""
        payload: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if stop:
            payload["stop"] = stop
        events = parse_stream(self._transport.stream(payload), prompt_tokens=estimate_prompt_tokens(messages))
        return events if self.breaker is None else self.breaker.stream(events)


def llm_client(
    settings: Settings,
    runtime_client: Any | None = None,
    http: httpx.Client | None = None,
    *,
    endpoint: str | None = None,
    breaker: CircuitBreaker | None = None,
) -> LlmClient:
    """The client `settings.llm_backend` asks for, with its own circuit breaker. `endpoint` (an endpoint name
    or a URL) defaults to `settings.llm_endpoint`; pass `settings.llm_secondary_endpoint` for the fallback."""
    endpoint = endpoint or settings.llm_endpoint
    transport: LlmTransport
    if settings.llm_backend == "sagemaker":
        transport = SageMakerLlmTransport(runtime_client or runtime_client_for(settings), endpoint)
    else:
        transport = HttpLlmTransport(http or http_client_for(settings), endpoint)
    return LlmClient(transport, breaker=breaker or breaker_for(endpoint, settings))
