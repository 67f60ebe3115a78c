"""Clients for the model endpoints, one per model, each behind its own circuit breaker (breaker.py). The
transport is SageMaker Runtime in AWS and HTTP to the local model server locally; the wire format is the
same (see sagemaker/*/README.md)."""

from ragline.endpoints.breaker import BreakerConfig, CircuitBreaker, State
from ragline.endpoints.embedding import (
    EmbeddingClient,
    HttpEmbeddingTransport,
    SageMakerEmbeddingTransport,
    embedding_client,
)
from ragline.endpoints.errors import EndpointError
from ragline.endpoints.llm import (
    HttpLlmTransport,
    LlmClient,
    LlmDelta,
    LlmDone,
    SageMakerLlmTransport,
    llm_client,
)

__all__ = [
    "BreakerConfig",
    "CircuitBreaker",
    "EmbeddingClient",
    "EndpointError",
    "HttpEmbeddingTransport",
    "HttpLlmTransport",
    "LlmClient",
    "LlmDelta",
    "LlmDone",
    "SageMakerEmbeddingTransport",
    "SageMakerLlmTransport",
    "State",
    "embedding_client",
    "llm_client",
]
