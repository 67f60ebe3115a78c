"""Index's use case: embed the chunks a ChunksReady points at and write them to the search index.

Index reads the parsed bucket (claim check) and writes the search index; it never touches the
documents table. It reports the outcome as an event (DocumentIndexed / DocumentFailed, source
ragline.index) and ingest applies it to the document's record."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ragline.contracts import (
    Chunk,
    ChunksReady,
    DocumentFailed,
    DocumentIndexed,
    EventDetail,
    EventMetadata,
    IndexingStarted,
)
from ragline.search.port import IndexedChunk, SearchIndex

from .errors import ChunksInvalid, DimensionMismatch, IndexingFailed, RetriesExhausted

# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------


class ChunkSource(Protocol):
    def read(self, key: str) -> list[Chunk]:
        """The chunks stored under `key`; ChunksNotFound / ChunksInvalid when they cannot be had."""


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. Permanent refusals raise EmbeddingRejected."""


class EventPublisher(Protocol):
    def publish(self, detail: EventDetail) -> None: ...


# --------------------------------------------------------------------------------------------
# Service
# --------------------------------------------------------------------------------------------


class IndexOutcome(StrEnum):
    INDEXED = "indexed"
    FAILED = "failed"


@dataclass(frozen=True)
class IndexResult:
    outcome: IndexOutcome
    indexed_count: int = 0
    reason: str | None = None


class IndexService:
    def __init__(
        self,
        chunks: ChunkSource,
        embedder: Embedder,
        index: SearchIndex,
        publisher: EventPublisher,
        *,
        dimension: int,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._chunks = chunks
        self._embedder = embedder
        self._index = index
        self._publisher = publisher
        self._dimension = dimension
        self._batch_size = batch_size
        # chunks_key → (chunks, vectors) embedded ahead for the batch being handled (see `prepared`)
        self._ready: dict[str, tuple[list[Chunk], list[list[float]]]] = {}
        self._started: set[str] = set()  # chunks_keys whose IndexingStarted this batch already sent

    @contextmanager
    def prepared(self, events: Sequence[ChunksReady]) -> Iterator[None]:
        """Embed a whole SQS batch's chunks together, in full embedding batches, before its records
        are handled one by one: one document's few chunks make a small, slow model call, and the
        round trips add up. Whatever cannot be prepared (a missing or invalid chunk file, a failed
        model call) is simply left to `index`, which handles each record on its own and reports
        its failure for that record only."""
        ready: list[tuple[ChunksReady, list[Chunk]]] = []
        for event in events:
            try:
                chunks = self._chunks.read(event.chunks_key)
                self._check(event, chunks)
                self._publish_started(event)
            except Exception:  # noqa: S112 - `index` meets it again and reports it for this record
                continue
            ready.append((event, chunks))
        pending = [chunk for _, chunks in ready for chunk in chunks]
        try:
            vectors = [
                v
                for start in range(0, len(pending), self._batch_size)
                for v in self._embed(pending[start : start + self._batch_size])
            ]
            offset = 0
            for event, chunks in ready:
                self._ready[event.chunks_key] = (chunks, vectors[offset : offset + len(chunks)])
                offset += len(chunks)
        except Exception:
            self._ready.clear()
        try:
            yield
        finally:
            self._ready.clear()
            self._started.clear()

    def index(self, event: ChunksReady) -> IndexResult:
        """Idempotent: chunks are upserted by chunk id, so a redelivered message rewrites the same
        rows and publishes the same IndexingStarted and DocumentIndexed (same idempotency keys).
        Transient errors propagate."""
        correlation_id = event.metadata.correlation_id
        try:
            if event.chunks_key in self._ready:
                chunks, vectors = self._ready.pop(event.chunks_key)
                self._index.upsert(
                    [IndexedChunk(chunk=c, vector=v) for c, v in zip(chunks, vectors, strict=True)]
                )
                written = len(chunks)
            else:
                written = self._index_alone(event)
        except IndexingFailed as exc:
            self._publish_failed(event, exc)
            return IndexResult(IndexOutcome.FAILED, reason=f"{exc.code}: {exc}")
        if event.version > 1:  # the new version replaces the previous one in search results
            self._index.delete_document(event.document_id, event.version - 1)
        self._publisher.publish(
            DocumentIndexed(
                metadata=_metadata(correlation_id, event, "indexed"),
                document_id=event.document_id,
                version=event.version,
                collection=event.collection,
                indexed_count=written,
            )
        )
        return IndexResult(IndexOutcome.INDEXED, indexed_count=written)

    def _index_alone(self, event: ChunksReady) -> int:
        chunks = self._chunks.read(event.chunks_key)
        self._check(event, chunks)
        self._publish_started(event)
        written = 0
        for start in range(0, len(chunks), self._batch_size):
            batch = chunks[start : start + self._batch_size]
            vectors = self._embed(batch)
            self._index.upsert([IndexedChunk(chunk=c, vector=v) for c, v in zip(batch, vectors, strict=True)])
            written += len(batch)
        return written

    def _publish_started(self, event: ChunksReady) -> None:
        if event.chunks_key in self._started:
            return
        self._started.add(event.chunks_key)
        self._publisher.publish(
            IndexingStarted(
                metadata=_metadata(event.metadata.correlation_id, event, "indexing-started"),
                document_id=event.document_id,
                version=event.version,
                chunk_count=event.chunk_count,
            )
        )

    def give_up(self, event: ChunksReady, error: Exception) -> None:
        """The last delivery of `event` failed with a transient error: report the document failed
        (`retries_exhausted`) so ingest stops waiting; the message itself goes to the DLQ. Vectors
        already written stay until the document is re-indexed or deleted."""
        self._publish_failed(event, RetriesExhausted(f"{type(error).__name__}: {error}"))

    def _publish_failed(self, event: ChunksReady, error: IndexingFailed) -> None:
        self._publisher.publish(
            DocumentFailed(
                metadata=_metadata(event.metadata.correlation_id, event, "failed-index"),
                document_id=event.document_id,
                version=event.version,
                stage="index",
                code=error.code,
                reason=str(error),
            )
        )

    @staticmethod
    def _check(event: ChunksReady, chunks: list[Chunk]) -> None:
        if len(chunks) != event.chunk_count:
            raise ChunksInvalid(
                f"{event.chunks_key} holds {len(chunks)} chunks, the message says {event.chunk_count}"
            )
        strangers = [
            c.chunk_id for c in chunks if (c.document_id, c.version) != (event.document_id, event.version)
        ]
        if strangers:
            raise ChunksInvalid(
                f"{event.chunks_key} holds chunks of another document version: {strangers[0]}"
            )

    def _embed(self, batch: Sequence[Chunk]) -> list[list[float]]:
        vectors = self._embedder.embed([chunk.text for chunk in batch])
        if len(vectors) != len(batch):
            raise DimensionMismatch(f"sent {len(batch)} texts, got {len(vectors)} vectors")
        wrong = next((len(v) for v in vectors if len(v) != self._dimension), None)
        if wrong is not None:
            raise DimensionMismatch(
                f"the index holds {self._dimension}-dimensional vectors, the embedder gave {wrong}"
            )
        return vectors


def _metadata(correlation_id: str, event: ChunksReady, what: str) -> EventMetadata:
    return EventMetadata(
        correlation_id=correlation_id, idempotency_key=f"{event.document_id}:v{event.version}:{what}"
    )
