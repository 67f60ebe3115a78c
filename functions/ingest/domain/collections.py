"""Collections: named sets of documents with their own chunking settings and embedding model.

Collections belong to a tenant (two tenants may both have `legal`); every caller of a tenant sees
and may create its collections. `default` exists in every tenant without being stored: its
settings are the deployment's (`RAGLINE_CHUNK_MAX_TOKENS`, `RAGLINE_CHUNK_OVERLAP_TOKENS`,
`RAGLINE_EMBEDDING_MODEL`), so changing them changes `default` for documents chunked afterwards.
A named collection's settings are fixed when it is created."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ragline.contracts import DEFAULT_COLLECTION, Collection, CreateCollectionRequest, Principal, utcnow

from .errors import ChunkTooLarge, CollectionAlreadyExists, CollectionNotFound, UnsupportedEmbeddingModel
from .ports import CollectionRepository

# [CLS] and [SEP] (BERT-style encoders such as MiniLM) around every chunk the model embeds.
SPECIAL_TOKENS = 2

# `default` was never created; its created_at says so rather than inventing a time.
IMPLICIT_CREATED_AT = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CollectionDefaults:
    """The deployment's settings: those of `default`, and the only embedding model there is."""

    chunk_max_tokens: int
    chunk_overlap_tokens: int
    embedding_model: str
    # The model's longest input in tokens, its own special tokens included: a longer chunk would
    # be refused by the endpoint (input_too_long) and its document fail after it was accepted.
    embedding_max_tokens: int = 256

    @property
    def max_chunk_tokens(self) -> int:
        return self.embedding_max_tokens - SPECIAL_TOKENS


class CollectionCatalog:
    def __init__(
        self,
        collections: CollectionRepository,
        defaults: CollectionDefaults,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._collections = collections
        self._defaults = defaults
        self._clock = clock

    @property
    def default(self) -> Collection:
        # Built without validation: a deployment may chunk outside the API's limits (tests do).
        return Collection.model_construct(
            name=DEFAULT_COLLECTION,
            description="Documents created without a collection",
            chunk_max_tokens=self._defaults.chunk_max_tokens,
            chunk_overlap_tokens=self._defaults.chunk_overlap_tokens,
            embedding_model=self._defaults.embedding_model,
            created_at=IMPLICIT_CREATED_AT,
        )

    def find(self, tenant: str | None, name: str) -> Collection | None:
        if name == DEFAULT_COLLECTION:
            return self.default
        return self._collections.get(tenant, name)

    def get(self, name: str, principal: Principal) -> Collection:
        collection = self.find(principal.tenant, name)
        if collection is None:
            raise CollectionNotFound(name)
        return collection

    def list(self, principal: Principal) -> list[Collection]:
        return [self.default, *self._collections.list(principal.tenant)]

    def create(self, request: CreateCollectionRequest, principal: Principal) -> Collection:
        model = self._defaults.embedding_model
        if "embedding_model" in request.model_fields_set and request.embedding_model != model:
            raise UnsupportedEmbeddingModel(request.embedding_model, model)
        if request.chunk_max_tokens > self._defaults.max_chunk_tokens:
            raise ChunkTooLarge(request.chunk_max_tokens, self._defaults.max_chunk_tokens, model)
        if request.name == DEFAULT_COLLECTION:
            raise CollectionAlreadyExists(request.name)
        collection = Collection(
            name=request.name,
            description=request.description,
            chunk_max_tokens=request.chunk_max_tokens,
            chunk_overlap_tokens=request.chunk_overlap_tokens,
            embedding_model=model,
            created_at=self._clock(),
        )
        self._collections.create(principal.tenant, collection)
        return collection
