"""Index's use case: embed the chunks a ChunksReady points at and write them to the search index.

Index reads the parsed bucket (claim check) and writes the search index; it never touches the
documents table. It reports the outcome as an event (DocumentIndexed / DocumentFailed, source
ragline.index) and ingest applies it to the document's record.

The update saga's index steps are methods here too (`index_version`, `activate`, `deactivate`,
`delete_version`, `delete_document`): a new version is written inactive, activated, and only then
is the old one deleted, so searches find the document at one version or the other throughout
(docs/search.md, "Versions and the active flag"). They publish nothing; the saga reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
from ragline.search.port import IndexedChunk, SearchIndex, VersionCount

from .errors import (
    ChunksInvalid,
    DimensionMismatch,
    IndexingFailed,
    ReplacementNotVisible,
    RetriesExhausted,
    VersionNotIndexed,
)

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

    def publish_many(self, details: Sequence[EventDetail]) -> None:
        """All of `details`, in as few calls as the bus allows; raises if any was not published."""


# --------------------------------------------------------------------------------------------
# Service
# --------------------------------------------------------------------------------------------


class IndexOutcome(StrEnum):
    INDEXED = "indexed"
    FAILED = "failed"


@dataclass(frozen=True)
class ChunkFile:
    """One document version's chunk file in the parsed bucket (what a ChunksReady points at)."""

    document_id: str
    version: int
    chunks_key: str
    chunk_count: int

    @classmethod
    def of(cls, event: ChunksReady) -> ChunkFile:
        return cls(event.document_id, event.version, event.chunks_key, event.chunk_count)


@dataclass(frozen=True)
class IndexResult:
    outcome: IndexOutcome
    indexed_count: int = 0
    reason: str | None = None


@dataclass
class _PreparedBatch:
    written: dict[str, int] = field(default_factory=dict)  # chunks_key → chunks written
    started: set[str] = field(default_factory=set)  # chunks_keys whose IndexingStarted went out


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
        # What `prepared` did for the batch being handled (one at a time, as in a Lambda environment).
        self._batch = _PreparedBatch()

    @contextmanager
    def prepared(self, events: Sequence[ChunksReady]) -> Iterator[None]:
        """Do a whole SQS batch's work at once before its records are handled one by one: one
        document's few chunks make a small, slow model call, and a write and an event per document
        add up. The batch's IndexingStarted go out in one PutEvents, its chunks are embedded in full
        model batches and written to the index in one upsert; `index` then only has to report each
        record. Whatever cannot be prepared (a missing or invalid chunk file, a failed call) is left
        to `index`, which handles that record on its own and reports its failure for it only."""
        batch = self._batch = _PreparedBatch()
        ready: list[tuple[ChunksReady, list[Chunk]]] = []
        for event in {event.chunks_key: event for event in events}.values():  # a redelivery may repeat one
            try:
                chunks = self._read(ChunkFile.of(event))
            except Exception:  # noqa: S112 - `index` meets it again and reports it for this record
                continue
            ready.append((event, chunks))
        try:
            self._publisher.publish_many([self._started_event(event) for event, _ in ready])
            batch.started = {event.chunks_key for event, _ in ready}
            pending = [chunk for _, chunks in ready for chunk in chunks]
            vectors = [
                v
                for start in range(0, len(pending), self._batch_size)
                for v in self._embed(pending[start : start + self._batch_size])
            ]
            self._index.upsert(
                [IndexedChunk(chunk=c, vector=v) for c, v in zip(pending, vectors, strict=True)]
            )
            batch.written = {event.chunks_key: len(chunks) for event, chunks in ready}
        except Exception:  # noqa: BLE001, S110 - each record is retried alone in `index`
            pass
        try:
            yield
        finally:
            self._batch = _PreparedBatch()

    def index(self, event: ChunksReady) -> IndexResult:
        """Idempotent: chunks are upserted by chunk id, so a redelivered message rewrites the same
        rows and publishes the same IndexingStarted and DocumentIndexed (same idempotency keys).
        Transient errors propagate."""
        correlation_id = event.metadata.correlation_id
        try:
            written = self._batch.written.get(event.chunks_key)
            if written is None:
                chunks = self._read(ChunkFile.of(event))
                self._publish_started(event)
                written = self._upsert(chunks, active=True)
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

    def _read(self, source: ChunkFile) -> list[Chunk]:
        chunks = self._chunks.read(source.chunks_key)
        self._check(source, chunks)
        return chunks

    def _upsert(self, chunks: list[Chunk], *, active: bool) -> int:
        """Embeds in model-sized batches and writes each batch as it is embedded."""
        written = 0
        for start in range(0, len(chunks), self._batch_size):
            batch = chunks[start : start + self._batch_size]
            vectors = self._embed(batch)
            self._index.upsert(
                [IndexedChunk(chunk=c, vector=v, active=active) for c, v in zip(batch, vectors, strict=True)]
            )
            written += len(batch)
        return written

    def _publish_started(self, event: ChunksReady) -> None:
        if event.chunks_key not in self._batch.started:
            self._publisher.publish(self._started_event(event))

    @staticmethod
    def _started_event(event: ChunksReady) -> IndexingStarted:
        return IndexingStarted(
            metadata=_metadata(event.metadata.correlation_id, event, "indexing-started"),
            document_id=event.document_id,
            version=event.version,
            chunk_count=event.chunk_count,
        )

    # ------------------------------------------------------------------ the update saga's steps

    def index_version(self, source: ChunkFile, *, active: bool = False) -> int:
        """Embed and write one document version's chunks, inactive unless asked: searches do not see
        them until `activate`. Returns how many were written. Idempotent (chunks are upserted by id).
        Raises IndexingFailed (ChunksNotFound, ChunksInvalid, DimensionMismatch, EmbeddingRejected)
        when retrying cannot help; anything else is transient."""
        return self._upsert(self._read(source), active=active)

    def activate(self, document_id: str, version: int) -> int:
        """Make the version searchable (the very next search sees it); returns its chunk count.
        Idempotent. Raises VersionNotIndexed if the index has no chunk of it."""
        count = self._index.set_active(document_id, version, True)
        if count == 0:
            raise VersionNotIndexed(f"{document_id} v{version} has no chunks in the index to activate")
        return count

    def deactivate(self, document_id: str, version: int) -> int:
        """Hide the version from searches without deleting it; returns its chunk count. Idempotent."""
        return self._index.set_active(document_id, version, False)

    def delete_version(self, document_id: str, version: int, *, replaced_by: int | None = None) -> int:
        """Delete one version's chunks; returns how many went. With `replaced_by`, first check that
        searches find that version (active chunks, through the readers' path) and raise
        ReplacementNotVisible (transient) if not, so the document never drops out of search."""
        if replaced_by is not None and self._index.count(document_id, replaced_by, active=True) == 0:
            raise ReplacementNotVisible(
                f"{document_id} v{replaced_by} is not searchable yet; v{version} stays until it is"
            )
        return self._index.delete_document(document_id, version)

    def delete_document(self, document_id: str) -> int:
        """Delete every version's chunks (the delete saga); returns how many went. Idempotent."""
        return self._index.delete_document(document_id)

    # ------------------------------------------------------------- the reconciler's (docs/saga.md)

    def inventory(self, after: tuple[str, int] | None = None, size: int = 1000) -> list[VersionCount]:
        """The index's chunk counts per (document, version), one page (see SearchIndex.inventory)."""
        return self._index.inventory(after, size)

    def restore_version(self, source: ChunkFile) -> int:
        """Write the version again from its chunk file and make it searchable: the repair of a
        document the table says is searchable but the index lacks (in part or whole). Idempotent."""
        self.index_version(source)
        return self.activate(source.document_id, source.version)

    # ------------------------------------------------------------------------------------------

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
    def _check(source: ChunkFile, chunks: list[Chunk]) -> None:
        if len(chunks) != source.chunk_count:
            raise ChunksInvalid(
                f"{source.chunks_key} holds {len(chunks)} chunks, the message says {source.chunk_count}"
            )
        strangers = [
            c.chunk_id for c in chunks if (c.document_id, c.version) != (source.document_id, source.version)
        ]
        if strangers:
            raise ChunksInvalid(
                f"{source.chunks_key} holds chunks of another document version: {strangers[0]}"
            )

    def _embed(self, batch: Sequence[Chunk]) -> list[list[float]]:
        vectors = self._embedder.embed([embedding_input(chunk) for chunk in batch])
        if len(vectors) != len(batch):
            raise DimensionMismatch(f"sent {len(batch)} texts, got {len(vectors)} vectors")
        wrong = next((len(v) for v in vectors if len(v) != self._dimension), None)
        if wrong is not None:
            raise DimensionMismatch(
                f"the index holds {self._dimension}-dimensional vectors, the embedder gave {wrong}"
            )
        return vectors


def _metadata(correlation_id: str, event: ChunksReady, what: str) -> EventMetadata:
    # The document's tenant, as ingest put it on ChunksReady: notify matches subscriptions by it.
    return EventMetadata(
        correlation_id=correlation_id,
        idempotency_key=f"{event.document_id}:v{event.version}:{what}",
        tenant=event.metadata.tenant,
    )


def embedding_input(chunk: Chunk) -> str:
    """What is embedded for a chunk: its text, then its document title and heading path, so a chunk
    that never names its subject ("It reduced mortality by 30%") is still found by it. The context
    goes last: when a chunk fills the model's input, truncation drops context, never content."""
    context = [chunk.title, *(heading for heading in chunk.heading_path if heading != chunk.title)]
    context_line = " > ".join(part for part in context if part.strip())
    return f"{chunk.text}\n\n{context_line}" if context_line else chunk.text
