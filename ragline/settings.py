"""Environment parsed once into one typed model. Lambdas get these variables from the CDK app;
the local platform sets them for its processes. Logic receives values, never reads os.environ."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    idempotency_table: str = "ragline-idempotency"
    idempotency_ttl_s: int = Field(
        default=24 * 3600, description="How long an Idempotency-Key replays its first response"
    )
    max_inline_bytes: int = Field(default=5 * 1024 * 1024, description="Largest inline document body")
    max_document_bytes: int = Field(
        default=100 * 1024 * 1024, description="Largest document on any path (inline or presigned upload)"
    )
    upload_url_ttl_s: int = Field(default=900, ge=1, description="How long a presigned upload URL is valid")
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 32
    embedding_tokenizer: str | None = Field(
        default=None,
        description="Path to the embedding model's tokenizer.json (chunk sizes are measured in it)",
    )

    # messaging
    event_bus: str = "ragline"
    index_queue_url: str | None = None

    # search index
    search_backend: Literal["opensearch", "lance"] = "opensearch"
    opensearch_endpoint: str | None = None
    search_index: str = Field(
        default="ragline-chunks", description="Index alias (OpenSearch) or table (LanceDB)"
    )
    lance_path: str = ".ragline/index"
    embedding_dimension: int = 384
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

    # context
    retrieve_function: str = "ragline-retrieve-invoke"
    lambda_endpoint_url: str | None = Field(default=None, description="Local Lambda Invoke emulator")
    context_window_tokens: int = 2048
    answer_min_score: float = 0.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
