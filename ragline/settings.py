"""Environment parsed once into one typed model. Lambdas get these variables from the CDK app;
the local platform sets them for its processes. Logic receives values, never reads os.environ."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragline.contracts import FilterableFieldType


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGLINE_", extra="ignore")

    # AWS (endpoint_url is set only locally, where it points at the moto server)
    aws_region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "RAGLINE_AWS_REGION")
    )
    aws_endpoint_url: str | None = None

    # ingest
    raw_bucket: str = "ragline-raw"
    parsed_bucket: str = "ragline-parsed"
    documents_table: str = "ragline-documents"
    collections_table: str = "ragline-collections"
    conversations_table: str = "ragline-conversations"
    answer_cache_table: str = "ragline-answer-cache"
    idempotency_table: str = "ragline-idempotency"
    idempotency_ttl_s: int = Field(
        default=24 * 3600, description="How long an Idempotency-Key replays its first response"
    )
    operations_table: str = "ragline-operations"
    operation_ttl_days: int = Field(
        default=30, ge=1, description="How long an operation (GET /v1/operations/{id}) is kept"
    )
    delete_state_machine_arn: str | None = Field(
        default=None, description="The document-delete saga's state machine (DELETE /v1/documents/{id})"
    )
    update_state_machine_arn: str | None = Field(
        default=None, description="The document-update saga's state machine (PUT /v1/documents/{id})"
    )
    max_inline_bytes: int = Field(default=5 * 1024 * 1024, description="Largest inline document body")
    max_document_bytes: int = Field(
        default=100 * 1024 * 1024, description="Largest document on any path (inline or presigned upload)"
    )
    upload_url_ttl_s: int = Field(default=900, ge=1, description="How long a presigned upload URL is valid")
    # S3 checks a presigned URL when the PUT starts, so one started just before expiry may run on:
    # an hour lets the largest default document (100 MiB) finish at 256 kbit/s (about 55 min).
    upload_grace_s: int = Field(
        default=3600,
        ge=0,
        description="After a presigned URL expires, how long its document waits for the bytes before "
        "it fails `upload_expired`",
    )
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 32
    embedding_tokenizer: str | None = Field(
        default=None,
        description="Path to the embedding model's tokenizer.json (chunk sizes are measured in it)",
    )

    # messaging
    event_bus: str = "ragline"
    index_queue_url: str | None = None
    uploads_queue_url: str | None = Field(
        default=None, description="Where ingest schedules each presigned upload's UploadDeadline"
    )

    # search index
    search_backend: Literal["opensearch", "lance"] = "opensearch"
    opensearch_endpoint: str | None = None
    search_index: str = Field(
        default="ragline-chunks", description="Index alias (OpenSearch) or table (LanceDB)"
    )
    lance_path: str = ".ragline/index"
    embedding_dimension: int = 384
    metadata_fields: dict[str, FilterableFieldType] = Field(
        default={},
        description='Metadata fields search can filter on, with their types (JSON: {"year": "number", '
        '"published": "date", "team": "keyword", "draft": "boolean"}); see ragline/search/fields.py',
    )
    # Keyword relevance: BM25 over text, plus the title and heading path with these boosts (0: off).
    # Title 1 vs 2 on SciFact dev: keyword nDCG@10 0.690 vs 0.631, hybrid the same (docs/search.md).
    title_boost: float = Field(default=1.0, ge=0)
    heading_boost: float = Field(default=1.0, ge=0)
    # Hybrid fusion defaults (a request's `fusion` overrides them); tuned on SciFact dev, docs/search.md.
    hybrid_fusion: Literal["rrf", "convex"] = "rrf"
    rrf_k: int = Field(default=20, ge=1)
    hybrid_keyword_weight: float = Field(default=1.0, ge=0)
    hybrid_vector_weight: float = Field(default=1.0, ge=0)
    # OpenSearch k-NN (HNSW); the reasons for the defaults are in ragline/search/opensearch.py.
    knn_engine: Literal["faiss", "lucene"] = "faiss"
    knn_space_type: Literal["innerproduct", "cosinesimil"] = "innerproduct"
    knn_m: int = Field(default=16, ge=2, le=100)
    knn_ef_construction: int = Field(default=128, ge=2)
    knn_ef_search: int = Field(default=100, ge=2)
    embedding_max_tokens: int = Field(
        default=256, ge=8, description="The embedding model's longest input, special tokens included"
    )
    embedding_model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="The model behind the embedding endpoint; the only one a collection may name",
    )

    # model endpoints: a SageMaker endpoint name in AWS, a base URL locally
    embedding_backend: Literal["sagemaker", "http"] = "sagemaker"
    embedding_endpoint: str = "ragline-embedding"
    llm_backend: Literal["sagemaker", "http"] = "sagemaker"
    llm_endpoint: str = "ragline-llm"
    endpoint_timeout_s: float = 30.0
    llm_secondary_endpoint: str | None = Field(
        default=None,
        description="Answers come from here (same backend as llm_endpoint) when the LLM endpoint fails or its "
        "circuit is open; without it they are extracts of the top sources",
    )
    # One circuit breaker per endpoint and process (ragline/endpoints/breaker.py)
    breaker_failure_rate: float = Field(
        default=0.5, gt=0, le=1, description="Share of failed calls in the window that opens the circuit"
    )
    breaker_minimum_calls: int = Field(
        default=5, ge=1, description="Calls the window must hold before its failure rate counts"
    )
    breaker_window_s: float = Field(default=60.0, gt=0, description="Sliding window of call outcomes")
    breaker_open_s: float = Field(
        default=30.0, gt=0, description="Cool-down before an open circuit lets one probe call through"
    )

    # ingest's reconciler (docs/saga.md, "Reconciliation")
    index_maintenance_function: str = Field(
        default="ragline-index-maintenance", description="The index context's maintenance function"
    )

    # context
    retrieve_function: str = "ragline-retrieve-invoke"
    lambda_endpoint_url: str | None = Field(default=None, description="Local Lambda Invoke emulator")
    context_window_tokens: int = 2048
    llm_tokenizer: str | None = Field(
        default=None,
        description="Path to the LLM's tokenizer.json: prompts are packed in its tokens (else estimated "
        "from characters, conservatively)",
    )
    # Calibrated for all-MiniLM-L6-v2 on SciFact (docs/search.md): every one of 150 real questions has a
    # chunk at 0.34 or above; 27 of 30 off-topic questions have none at 0.3. Another model: measure again.
    answer_min_score: float | None = Field(
        default=0.3,
        description="Cosine similarity the best retrieved chunk must reach for an answer to be generated "
        "(search's `min_score`); below it the answer is 'no relevant documents' without an LLM call",
    )
    conversation_ttl_days: int = Field(
        default=30, ge=1, description="A conversation is deleted this long after its last turn"
    )
    conversation_max_turns: int = Field(
        default=20,
        ge=1,
        le=50,
        description="Turns one conversation may hold (one DynamoDB item keeps them all; 400 KB at most)",
    )
    answer_cache_ttl_s: int = Field(
        default=86_400, ge=0, description="How long a cached answer is served; 0 turns the cache off"
    )

    # notify (webhooks and emails; docs/events/README.md)
    subscriptions_table: str = "ragline-subscriptions"
    webhook_secrets_table: str = "ragline-webhook-secrets"
    deliveries_queue_url: str | None = Field(default=None, description="Where notify queues each delivery")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="One webhook POST, connect to answer")
    webhook_backoff_s: int = Field(
        default=30, ge=0, description="Wait before a failed delivery's second try; doubled each try after"
    )
    webhook_backoff_max_s: int = Field(default=3600, ge=0, le=43_200)
    webhook_disable_after: int = Field(
        default=20, ge=1, description="Consecutive failed attempts that disable a subscription"
    )
    webhook_allow_loopback: bool = Field(
        default=False,
        description="Tests only: let webhooks reach loopback addresses (and plain http there)",
    )
    notify_email_sender: str | None = Field(
        default=None, description="The SES identity emails come from (none: email subscriptions fail)"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
