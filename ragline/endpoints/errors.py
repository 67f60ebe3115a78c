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
    """The model server answered `status`; its body is `{"error": {"code", "message"}}` when it is ours."""
    code, message = f"http_{status}", ""
    try:
        error = json.loads(body or b"")["error"]
        code, message = str(error["code"]), str(error.get("message", ""))
    except (ValueError, TypeError, KeyError):
        message = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body or "")[:500]
    return EndpointError(
        code, message or f"HTTP {status}", retryable=status >= 500 or status == 429, status=status
    )


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
