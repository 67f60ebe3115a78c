"""The ingest worker's use case: parse and chunk an uploaded document, hand the chunks to index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ragline.contracts import (
    Chunk,
    ChunksReady,
    Document,
    DocumentFailed,
    DocumentStatus,
    DocumentUploaded,
    utcnow,
)

from .chunking import Chunker
from .collections import CollectionCatalog
from .errors import (
    BlobNotFound,
    CollectionNotFound,
    EmptyDocument,
    IngestError,
    ParseError,
    RetriesExhausted,
)
from .parsing import MAX_PARSE_BYTES, parse
from .ports import (
    BlobStore,
    DocumentRepository,
    EventPublisher,
    MessageSender,
    chunks_key,
    event_metadata,
    fail_document,
    text_key,
)

# --------------------------------------------------------------------------------------------
# Worker: parse and chunk an uploaded document
# --------------------------------------------------------------------------------------------


class ChunkOutcome(StrEnum):
    CHUNKED = "chunked"
    RESENT = "resent"  # already chunked: the claim check is sent again (the send may have failed)
    SKIPPED = "skipped"  # duplicate, stale or unknown: nothing to do
    FAILED = "failed"  # permanent: the document cannot be parsed; DocumentFailed was published


@dataclass(frozen=True)
class ChunkResult:
    outcome: ChunkOutcome
    chunk_count: int = 0
    reason: str | None = None


class ChunkingService:
    def __init__(
        self,
        documents: DocumentRepository,
        raw: BlobStore,
        parsed: BlobStore,
        publisher: EventPublisher,
        index_queue: MessageSender,
        chunker: Chunker,
        *,
        collections: CollectionCatalog | None = None,
        max_document_bytes: int = MAX_PARSE_BYTES,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`collections` None: every document is chunked with the chunker's own settings."""
        self._documents = documents
        self._publisher = publisher
        self._index_queue = index_queue
        self._clock = clock
        self._versions = VersionChunker(
            raw, parsed, chunker, collections=collections, max_document_bytes=max_document_bytes
        )

    def process(self, event: DocumentUploaded) -> ChunkResult:
        """Idempotent: safe to call again for the same event (SQS delivers at least once).
        Transient errors (storage, network) propagate so the message is retried."""
        document = self._documents.get(event.document_id)
        if document is None or document.version != event.version:
            return ChunkResult(ChunkOutcome.SKIPPED, reason="no record of this version")
        correlation_id = event.metadata.correlation_id
        if document.status == DocumentStatus.CHUNKED:
            # The status write is the commit point; the send after it may not have happened.
            self._send_chunks_ready(document, document.chunk_count or 0, correlation_id)
            return ChunkResult(ChunkOutcome.RESENT, chunk_count=document.chunk_count or 0)
        if document.status not in _CHUNKABLE:
            return ChunkResult(ChunkOutcome.SKIPPED, reason=f"already {document.status}")
        # received -> parsing says work started; a record already `parsing` is a retry after a
        # crash or a timeout, which starts over (every write below is idempotent).
        if document.status == DocumentStatus.RECEIVED and not self._documents.update_status(
            document.id,
            version=document.version,
            expected={DocumentStatus.RECEIVED},
            status=DocumentStatus.PARSING,
            updated_at=self._clock(),
        ):
            return ChunkResult(ChunkOutcome.SKIPPED, reason="another delivery started first")

        try:
            parsed, chunks = self._versions.parse_and_chunk(document, event.raw_key)
        except (ParseError, BlobNotFound, CollectionNotFound) as exc:
            self._fail(document, exc, correlation_id)
            return ChunkResult(ChunkOutcome.FAILED, reason=str(exc))
        self._versions.write(document, parsed.text, chunks)
        committed = self._documents.update_status(
            document.id,
            version=document.version,
            expected={DocumentStatus.PARSING},
            status=DocumentStatus.CHUNKED,
            updated_at=self._clock(),
            chunk_count=len(chunks),
        )
        if not committed:  # a concurrent delivery of the same event got there first
            return ChunkResult(ChunkOutcome.SKIPPED, reason="status changed while chunking")
        self._send_chunks_ready(document, len(chunks), correlation_id)
        return ChunkResult(ChunkOutcome.CHUNKED, chunk_count=len(chunks))

    def _send_chunks_ready(self, document: Document, chunk_count: int, correlation_id: str) -> None:
        self._index_queue.send(
            ChunksReady(
                metadata=event_metadata(
                    correlation_id, document.id, document.version, "chunks-ready", tenant=document.tenant
                ),
                document_id=document.id,
                version=document.version,
                collection=document.collection,
                chunks_key=chunks_key(document.id, document.version),
                chunk_count=chunk_count,
            )
        )

    def _fail(self, document: Document, error: IngestError, correlation_id: str) -> None:
        fail_document(
            self._documents,
            self._publisher,
            document,
            error,
            expected=_CHUNKABLE,
            correlation_id=correlation_id,
            what="failed-ingest",
            now=self._clock(),
        )

    def give_up(self, event: DocumentUploaded, error: Exception) -> bool:
        """The last delivery of `event` failed with a transient error: mark the document failed
        (`retries_exhausted`) and publish DocumentFailed, so nothing waits for it forever. The
        message still goes to the DLQ. True if the record changed (and the event was published)."""
        reason = f"{type(error).__name__}: {error}"
        changed = self._documents.update_status(
            event.document_id,
            version=event.version,
            # chunked too: the claim check may never have reached the index queue
            expected={*_CHUNKABLE, DocumentStatus.CHUNKED},
            status=DocumentStatus.FAILED,
            updated_at=self._clock(),
            failure_reason=f"{RetriesExhausted.code}: {reason}",
            failure_code=RetriesExhausted.code,
        )
        if changed:
            self._publisher.publish(
                DocumentFailed(
                    metadata=event_metadata(
                        event.metadata.correlation_id,
                        event.document_id,
                        event.version,
                        "failed-ingest",
                        tenant=event.metadata.tenant,
                    ),
                    document_id=event.document_id,
                    version=event.version,
                    stage="ingest",
                    code=RetriesExhausted.code,
                    reason=reason,
                )
            )
        return changed


class VersionChunker:
    """Parse one version's original, chunk it with its collection's settings and write its parsed
    text and chunk file (the claim check index reads): the ingest worker's pipeline, and the update
    saga's ParseAndChunk (docs/saga.md). Writes nothing on the document's record."""

    def __init__(
        self,
        raw: BlobStore,
        parsed: BlobStore,
        chunker: Chunker,
        *,
        collections: CollectionCatalog | None = None,
        max_document_bytes: int = MAX_PARSE_BYTES,
    ) -> None:
        self._raw = raw
        self._parsed = parsed
        self._chunker = chunker
        self._collections = collections
        self._max_bytes = max_document_bytes

    def chunk_version(self, document: Document, raw_key: str) -> int:
        """Parse, chunk and write `document` (at its version, with its title, groups and metadata)
        from the original at `raw_key`; returns the chunk count. Idempotent (the files are
        overwritten). Raises ParseError (EmptyDocument among them), BlobNotFound, CollectionNotFound."""
        parsed, chunks = self.parse_and_chunk(document, raw_key)
        self.write(document, parsed.text, chunks)
        return len(chunks)

    def parse_and_chunk(self, document: Document, raw_key: str) -> tuple[Any, list[Chunk]]:
        max_tokens, overlap_tokens = self._chunk_settings(document)
        parsed = parse(self._raw.get(raw_key), document.content_type, max_bytes=self._max_bytes)
        spans = self._chunker.chunk(parsed, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
        if not spans:
            raise EmptyDocument("document has no text to index")
        chunks = [
            Chunk(
                document_id=document.id,
                version=document.version,
                ordinal=ordinal,
                collection=document.collection,
                title=document.title,
                text=span.text,
                token_count=span.token_count,
                heading_path=list(span.heading_path),
                page=span.page,
                char_start=span.char_start,
                char_end=span.char_end,
                allowed_groups=document.allowed_groups,
                tenant=document.tenant,
                metadata=document.metadata,
            )
            for ordinal, span in enumerate(spans)
        ]
        return parsed, chunks

    def write(self, document: Document, text: str, chunks: Sequence[Chunk]) -> None:
        self._parsed.put(
            text_key(document.id, document.version), text.encode("utf-8"), "text/plain; charset=utf-8"
        )
        self._parsed.put(
            chunks_key(document.id, document.version), encode_chunks(chunks), "application/x-ndjson"
        )

    def _chunk_settings(self, document: Document) -> tuple[int | None, int | None]:
        """The document's collection's chunk size and overlap (None: the chunker's own)."""
        if self._collections is None:
            return None, None
        collection = self._collections.find(document.tenant, document.collection)
        if collection is None:
            raise CollectionNotFound(document.collection)
        return collection.chunk_max_tokens, collection.chunk_overlap_tokens


_CHUNKABLE = frozenset({DocumentStatus.RECEIVED, DocumentStatus.PARSING})


def encode_chunks(chunks: Sequence[Chunk]) -> bytes:
    return "".join(chunk.model_dump_json() + "\n" for chunk in chunks).encode("utf-8")
