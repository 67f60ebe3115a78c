"""Client for the embedding endpoint (wire format: sagemaker/embedding/README.md).

`EmbeddingClient` batches and checks; a transport moves one JSON request and its JSON response, over SageMaker
Runtime (`invoke_endpoint`) in AWS or plain HTTP to the local model server."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from ragline.endpoints.breaker import CircuitBreaker, breaker_for
from ragline.endpoints.errors import EndpointError, from_botocore, from_client_error, from_httpx, from_status
from ragline.endpoints.wiring import http_client_for, runtime_client_for
from ragline.settings import Settings

JSON = "application/json"


class EmbeddingTransport(Protocol):
    def invoke(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST one request body, return the decoded response body; raise EndpointError on failure."""
        ...


def _decode(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError as exc:
        raise EndpointError("bad_response", f"Response is not JSON: {exc}", retryable=False) from exc
    if not isinstance(decoded, dict):
        raise EndpointError("bad_response", "Response is not a JSON object", retryable=False)
    return decoded


class SageMakerEmbeddingTransport:
    def __init__(self, runtime_client: Any, endpoint_name: str) -> None:
        self._runtime = runtime_client
        self._endpoint = endpoint_name

    def invoke(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._runtime.invoke_endpoint(
                EndpointName=self._endpoint, Body=json.dumps(payload), ContentType=JSON, Accept=JSON
            )
            body = response["Body"].read()
        except ClientError as exc:
            raise from_client_error(exc) from exc
        except BotoCoreError as exc:
            raise from_botocore(exc) from exc
        return _decode(body)


class HttpEmbeddingTransport:
    def __init__(self, http: httpx.Client, base_url: str) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/invocations"

    def invoke(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(self._url, json=payload, headers={"Accept": JSON})
        except httpx.HTTPError as exc:
            raise from_httpx(exc) from exc
        if response.status_code >= 400:
            raise from_status(response.status_code, response.content)
        return _decode(response.content)


class EmbeddingClient:
    """Embeds any number of texts, `max_batch` per request, in order. With a breaker, each request goes
    through it: an open circuit fails fast with EndpointError("circuit_open", retryable=True)."""

    def __init__(
        self,
        transport: EmbeddingTransport,
        *,
        max_batch: int = 32,
        normalize: bool = True,
        truncate: bool = False,
        dimension: int | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """`truncate`: the endpoint embeds the beginning of an input longer than the model takes,
        instead of refusing it (400 input_too_long)."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._transport = transport
        self._max_batch = max_batch
        self._normalize = normalize
        self._truncate = truncate
        self._dimension = dimension
        self.breaker = breaker

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._max_batch):
            batch = list(texts[start : start + self._max_batch])
            payload: dict[str, Any] = {"inputs": batch, "normalize": self._normalize}
            if self._truncate:
                payload["truncate"] = True
            body = self._invoke(payload)
            vectors.extend(self._checked(body, expected=len(batch)))
        return vectors

    def _invoke(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.breaker is None:
            return self._transport.invoke(payload)
        return self.breaker.call(lambda: self._transport.invoke(payload))

    def _checked(self, body: dict[str, Any], *, expected: int) -> list[list[float]]:
        embeddings = body.get("embeddings")
        if not isinstance(embeddings, list):
            raise EndpointError("bad_response", "Response has no `embeddings` list", retryable=False)
        if len(embeddings) != expected:
            raise EndpointError(
                "count_mismatch", f"Sent {expected} texts, got {len(embeddings)} embeddings", retryable=False
            )
        if self._dimension is not None and any(len(v) != self._dimension for v in embeddings):
            raise EndpointError(
                "dimension_mismatch", f"Expected {self._dimension}-dimensional embeddings", retryable=False
            )
        return embeddings


def embedding_client(
    settings: Settings,
    runtime_client: Any | None = None,
    http: httpx.Client | None = None,
    *,
    truncate: bool = False,
) -> EmbeddingClient:
    """The client `settings.embedding_backend` asks for, with the endpoint's circuit breaker:
    `embedding_endpoint` is an endpoint name or a URL."""
    transport: EmbeddingTransport
    if settings.embedding_backend == "sagemaker":
        runtime = runtime_client or runtime_client_for(settings)
        transport = SageMakerEmbeddingTransport(runtime, settings.embedding_endpoint)
    else:
        transport = HttpEmbeddingTransport(http or http_client_for(settings), settings.embedding_endpoint)
    return EmbeddingClient(
        transport,
        truncate=truncate,
        dimension=settings.embedding_dimension,
        breaker=breaker_for(settings.embedding_endpoint, settings),
    )
