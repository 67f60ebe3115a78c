"""One error type for both model endpoints and both transports, classified once.

`retryable` tells the caller (an SQS consumer, the answer handler) whether the same request may succeed later:
4xx from the model server is a bad request and never will; 5xx, throttling, timeouts and broken streams may.
botocore has already retried what it retries (standard mode, see ragline/aws.py); nothing here retries."""

from __future__ import annotations

import json
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

# SageMaker Runtime error codes that mean "try again later" (the rest are the caller's fault).
_RETRYABLE_SAGEMAKER_CODES = frozenset(
    {
        "InternalFailure",
        "ServiceUnavailable",
        "InternalDependencyException",
        "ModelNotReadyException",
        "ThrottlingException",
        "ModelStreamError",
        "InternalStreamFailure",
    }
)


class EndpointError(Exception):
    """A model endpoint call failed. `code` is stable (clients branch on it), `message` is for humans."""

    def __init__(self, code: str, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.status = status


def from_status(status: int, body: bytes | str | None) -> EndpointError:
    """The model server answered `status`; its body names the error when it is a server we know."""
    code, message = _named_error(body)
    if message is None:
        message = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body or "")[:500]
    return EndpointError(
        code or f"http_{status}",
        message or f"HTTP {status}",
        retryable=status >= 500 or status == 429,
        status=status,
    )


def _named_error(body: bytes | str | None) -> tuple[str | None, str | None]:
    """(code, message) from the error bodies the LLM and embedding servers send: `{"error": {"code",
    "message"}}` (this project's servers; vLLM and OpenAI put a word in `type` and a number in `code`),
    `{"error": "...", "error_type": "..."}` (TGI) or `{"object": "error", ...}` (older vLLM)."""
    try:
        decoded = json.loads(body or b"")
    except (ValueError, TypeError):
        return None, None
    if not isinstance(decoded, dict):
        return None, None
    error = decoded if decoded.get("object") == "error" else decoded.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        if not isinstance(code, str) or not code:
            code = error.get("type")
        return (str(code) if code else None), str(error.get("message", ""))
    if isinstance(error, str):
        kind = decoded.get("error_type")
        return (str(kind) if kind else None), error
    return None, None


def from_client_error(exc: ClientError) -> EndpointError:
    """A SageMaker Runtime error. ModelError carries the container's own status and body: classify on those."""
    response: dict[str, Any] = exc.response
    error = response.get("Error", {})
    code = error.get("Code", "Unknown")
    if code == "ModelError":
        original_status = response.get("OriginalStatusCode") or error.get("OriginalStatusCode")
        if original_status:
            original_body = response.get("OriginalMessage") or error.get("OriginalMessage")
            return from_status(int(original_status), original_body)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    retryable = code in _RETRYABLE_SAGEMAKER_CODES or (
        status is not None and (status >= 500 or status == 429)
    )
    return EndpointError(code, error.get("Message", str(exc)), retryable=retryable, status=status)


def from_botocore(exc: BotoCoreError) -> EndpointError:
    if isinstance(exc, ReadTimeoutError):
        return EndpointError("endpoint_timeout", str(exc), retryable=True)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return EndpointError("endpoint_unreachable", str(exc), retryable=True)
    return EndpointError("endpoint_failure", str(exc), retryable=False)


def from_httpx(exc: httpx.HTTPError) -> EndpointError:
    if isinstance(exc, httpx.TimeoutException):
        return EndpointError("endpoint_timeout", str(exc) or type(exc).__name__, retryable=True)
    if isinstance(exc, httpx.TransportError):
        return EndpointError("endpoint_unreachable", str(exc) or type(exc).__name__, retryable=True)
    return EndpointError("endpoint_failure", str(exc) or type(exc).__name__, retryable=False)
