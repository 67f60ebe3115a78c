"""Ingest's services over in-memory fakes of their ports (no AWS)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.ingest.domain.chunking import Chunker
from functions.ingest.domain.documents import DocumentService
from functions.ingest.domain.errors import (
    BlobNotFound,
    DocumentAlreadyExists,
    DocumentNotFound,
    DocumentTooLarge,
    EventPublishFailed,
)
from functions.ingest.domain.pipeline import ChunkingService, ChunkOutcome
from functions.ingest.domain.ports import (
    ContentClaim,
    ContentClaimed,
    DocumentPage,
    chunks_key,
    listing_position,
    raw_key,
    text_key,
)
from functions.ingest.domain.status import StatusService
from ragline.contracts import (
    Chunk,
    ChunksReady,
    ContentType,
    CreateDocumentRequest,
    Document,
    DocumentFailed,
    DocumentIndexed,
    DocumentStatus,
    DocumentUploaded,
    EventDetail,
    EventMetadata,
    Principal,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ALICE = Principal(user_id="alice", groups=frozenset({"engineering"}), tenant="acme")

# ---------------------------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------------------------


class WordCounter:
    def count(self, text: str) -> int:
        return len(text.split())


class InMemoryDocuments:
    def __init__(self) -> None:
        self.items: dict[str, Document] = {}
        self.claims: dict[str, ContentClaim] = {}

    def create(
        self, document: Document, *, content_key: str | None = None, replacing: ContentClaim | None = None
    ) -> None:
        if document.id in self.items:
            raise DocumentAlreadyExists(document.id)
        if content_key is not None:
            held = self.claims.get(content_key)
            if held is not None and held != replacing:
                raise ContentClaimed(content_key)
            self.claims[content_key] = ContentClaim(content_key, document.id, document.version)
        self.items[document.id] = document

    def find_by_content(self, content_key: str) -> ContentClaim | None:
        return self.claims.get(content_key)

    def get(self, document_id: str) -> Document | None:
        return self.items.get(document_id)

    def list_page(
        self,
        *,
        tenant: str | None,
        collection: str | None,
        status: DocumentStatus | None,
        after: str | None,
        limit: int,
    ) -> DocumentPage:
        ordered = sorted(
            (d for d in self.items.values() if d.tenant == tenant),
            key=listing_position,
            reverse=True,
        )
        if collection is not None:
            ordered = [d for d in ordered if d.collection == collection]
        if after is not None:
            ordered = [d for d in ordered if listing_position(d) < after]
        page = ordered[:limit]
        last = listing_position(page[-1]) if len(page) == limit else None
        return DocumentPage([d for d in page if status is None or d.status == status], last)

    def update_status(
        self,
        document_id: str,
        *,
        version: int,
        expected: Collection[DocumentStatus],
        status: DocumentStatus,
        updated_at: datetime,
        chunk_count: int | None = None,
        indexed_count: int | None = None,
        failure_reason: str | None = None,
        failure_code: str | None = None,
    ) -> bool:
        current = self.items.get(document_id)
        if current is None or current.version != version or current.status not in expected:
            return False
        changes = {
            "status": status,
            "updated_at": updated_at,
            "stage_times": current.stage_times | {status.value: updated_at},
        }
        optional = {
            "chunk_count": chunk_count,
            "indexed_count": indexed_count,
            "failure_reason": failure_reason,
            "failure_code": failure_code,
        }
        changes |= {k: v for k, v in optional.items() if v is not None}
        self.items[document_id] = current.model_copy(update=changes)
        return True


class InMemoryBlobs:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.puts = 0

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.objects[key] = (data, content_type)
        self.puts += 1

    def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise BlobNotFound(key)
        return self.objects[key][0]


class Recorder:
    """Both an EventPublisher and a MessageSender."""

    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[EventDetail] = []
        self.error = error

    def publish(self, detail: EventDetail) -> None:
        if self.error:
            raise self.error
        self.sent.append(detail)

    send = publish


class Unavailable(Exception):
    pass


class BrokenBlobs(InMemoryBlobs):
    def get(self, key: str) -> bytes:
        raise Unavailable("S3 is down")


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


class World:
    def __init__(self, publisher_error: Exception | None = None, max_inline_bytes: int = 10_000) -> None:
        self.documents = InMemoryDocuments()
        self.raw = InMemoryBlobs()
        self.parsed = InMemoryBlobs()
        self.bus = Recorder(publisher_error)
        self.index_queue = Recorder()
        ids = iter(f"doc{i}" for i in range(1000))
        self.api = DocumentService(
            self.documents,
            self.raw,
            self.bus,
            max_inline_bytes=max_inline_bytes,
            clock=lambda: NOW,
            ids=lambda: next(ids),
        )
        self.chunking = ChunkingService(
            self.documents,
            self.raw,
            self.parsed,
            Recorder() if publisher_error else self.bus,
            self.index_queue,
            Chunker(WordCounter(), max_tokens=12, overlap_tokens=2),
            clock=lambda: NOW,
        )
        self.status = StatusService(self.documents, clock=lambda: NOW)

    def upload(self, text: str = "# Keys\n\nRotate keys. Every ninety days.", **fields: object) -> Document:
        request = CreateDocumentRequest(
            title="Runbook",
            text=text,
            allowed_groups=["engineering"],
            **fields,  # type: ignore[arg-type]
        )
        return self.api.create(request, ALICE, "corr-1").document

    def uploaded_event(self) -> DocumentUploaded:
        (event,) = [e for e in self.bus.sent if isinstance(e, DocumentUploaded)]
        return event

    def chunks(self, document: Document) -> list[Chunk]:
        data = self.parsed.objects[chunks_key(document.id, document.version)][0]
        return [Chunk.model_validate_json(line) for line in data.decode().splitlines()]


@pytest.fixture
def world() -> World:
    return World()


def meta(what: str) -> EventMetadata:
    return EventMetadata(correlation_id="corr-1", idempotency_key=what)


# ---------------------------------------------------------------------------------------------
# DocumentService
# ---------------------------------------------------------------------------------------------


def test_create_stores_object_then_record_then_announces(world: World) -> None:
    text = "# Keys\n\nRotate keys."
    document = world.upload(text, metadata={"team": "sre"})

    data, content_type = world.raw.objects[raw_key(document.id, 1)]
    assert data == text.encode() and content_type == "text/markdown; charset=utf-8"
    stored = world.documents.get(document.id)
    assert stored == document
    assert stored.status == DocumentStatus.RECEIVED and stored.version == 1
    assert stored.content_hash == hashlib.sha256(text.encode()).hexdigest()
    assert (stored.owner, stored.tenant, stored.metadata) == ("alice", "acme", {"team": "sre"})
    event = world.uploaded_event()
    assert (event.document_id, event.version, event.raw_key) == (document.id, 1, "raw/doc0/v1/original")
    assert event.metadata.correlation_id == "corr-1"


def test_create_refuses_documents_over_the_inline_limit() -> None:
    world = World(max_inline_bytes=10)
    with pytest.raises(DocumentTooLarge):
        world.upload("x" * 11)
    assert not world.raw.objects and not world.documents.items and not world.bus.sent


def test_size_is_measured_in_utf8_bytes() -> None:
    world = World(max_inline_bytes=10)
    with pytest.raises(DocumentTooLarge):
        world.upload("é" * 6)  # 6 characters, 12 bytes


def test_a_failed_publish_marks_the_record_failed() -> None:
    world = World(publisher_error=Unavailable("bus down"))
    with pytest.raises(EventPublishFailed):
        world.upload()
    (document,) = world.documents.items.values()
    assert document.status == DocumentStatus.FAILED
    assert document.failure_reason.startswith("event_publish_failed")


@pytest.mark.parametrize(
    "principal",
    [
        Principal(user_id="bob", groups=frozenset({"engineering"}), tenant="acme"),
        Principal(user_id="alice", groups=frozenset(), tenant="acme"),  # the owner
    ],
)
def test_get_shows_documents_to_group_members_and_the_owner(world: World, principal: Principal) -> None:
    document = world.upload()
    assert world.api.get(document.id, principal).id == document.id


@pytest.mark.parametrize(
    "principal",
    [
        Principal(user_id="carol", groups=frozenset({"finance"}), tenant="acme"),
        Principal(user_id="dave", groups=frozenset({"engineering"}), tenant="other"),
        Principal(user_id="alice", groups=frozenset({"engineering"}), tenant="other"),
    ],
)
def test_get_hides_documents_from_others(world: World, principal: Principal) -> None:
    document = world.upload()
    with pytest.raises(DocumentNotFound):
        world.api.get(document.id, principal)


def test_get_of_an_unknown_document_is_not_found(world: World) -> None:
    with pytest.raises(DocumentNotFound):
        world.api.get("missing", ALICE)


# ---------------------------------------------------------------------------------------------
# ChunkingService
# ---------------------------------------------------------------------------------------------


def test_process_writes_chunks_and_hands_them_to_the_index(world: World) -> None:
    document = world.upload("# Keys\n\nRotate keys. Every ninety days.\n\n## Why\n\nLeaks happen.")
    result = world.chunking.process(world.uploaded_event())

    assert result.outcome == ChunkOutcome.CHUNKED
    chunks = world.chunks(document)
    assert [c.ordinal for c in chunks] == list(range(len(chunks))) and result.chunk_count == len(chunks)
    assert chunks[-1].heading_path == ["Keys", "Why"]
    assert all(c.allowed_groups == ["engineering"] and c.tenant == "acme" for c in chunks)
    text = world.parsed.objects[text_key(document.id, 1)][0].decode()
    assert all(text[c.char_start : c.char_end] == c.text for c in chunks)
    stored = world.documents.get(document.id)
    assert (stored.status, stored.chunk_count) == (DocumentStatus.CHUNKED, len(chunks))
    (ready,) = world.index_queue.sent
    assert isinstance(ready, ChunksReady)
    assert (ready.chunks_key, ready.chunk_count) == (f"parsed/{document.id}/v1/chunks.jsonl", len(chunks))
    assert ready.metadata.correlation_id == "corr-1"


def test_redelivery_after_chunking_resends_the_claim_check_only(world: World) -> None:
    world.upload()
    event = world.uploaded_event()
    world.chunking.process(event)
    writes = world.parsed.puts

    result = world.chunking.process(event)

    assert result.outcome == ChunkOutcome.RESENT
    assert world.parsed.puts == writes
    first, second = world.index_queue.sent
    same = {"metadata": {"occurred_at"}}
    assert first.model_dump(exclude=same) == second.model_dump(exclude=same)  # same idempotency key too


@pytest.mark.parametrize("status", [DocumentStatus.INDEXED, DocumentStatus.FAILED])
def test_redelivery_after_the_outcome_is_skipped(world: World, status: DocumentStatus) -> None:
    document = world.upload()
    world.documents.items[document.id] = document.model_copy(update={"status": status})
    assert world.chunking.process(world.uploaded_event()).outcome == ChunkOutcome.SKIPPED
    assert not world.index_queue.sent


def test_an_event_for_another_version_is_skipped(world: World) -> None:
    document = world.upload()
    world.documents.items[document.id] = document.model_copy(update={"version": 2})
    assert world.chunking.process(world.uploaded_event()).outcome == ChunkOutcome.SKIPPED
    assert world.documents.get(document.id).status == DocumentStatus.RECEIVED


@pytest.mark.parametrize(
    ("content", "code"), [(b"\xff\xfe\xfa", "parse_error"), (b" \n\n ", "empty_document")]
)
def test_unparseable_documents_fail_permanently(world: World, content: bytes, code: str) -> None:
    document = world.upload()
    world.raw.objects[raw_key(document.id, 1)] = (content, "text/markdown")

    result = world.chunking.process(world.uploaded_event())

    assert result.outcome == ChunkOutcome.FAILED
    stored = world.documents.get(document.id)
    assert stored.status == DocumentStatus.FAILED and stored.failure_reason.startswith(code)
    (failed,) = [e for e in world.bus.sent if isinstance(e, DocumentFailed)]
    assert (failed.stage, failed.code, failed.source) == ("ingest", code, "ragline.ingest")
    assert failed.metadata.correlation_id == "corr-1"
    assert not world.index_queue.sent


def test_a_missing_original_fails_permanently(world: World) -> None:
    document = world.upload()
    del world.raw.objects[raw_key(document.id, 1)]
    assert world.chunking.process(world.uploaded_event()).outcome == ChunkOutcome.FAILED


def test_transient_errors_propagate_and_change_nothing(world: World) -> None:
    document = world.upload()
    broken = ChunkingService(
        world.documents, BrokenBlobs(), world.parsed, world.bus, world.index_queue, Chunker(WordCounter(), 12)
    )
    with pytest.raises(Unavailable):
        broken.process(world.uploaded_event())
    # Work started (parsing) and nothing else happened; the retry picks it up from there.
    assert world.documents.get(document.id).status == DocumentStatus.PARSING
    assert not world.parsed.objects and not world.index_queue.sent


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.text(alphabet="abc .\n#-", min_size=1, max_size=60), min_size=1, max_size=8).map("\n\n".join)
)
def test_ordinals_are_contiguous(text: str) -> None:
    if not text.strip():
        return
    world = World()
    document = world.upload(text)
    world.chunking.process(world.uploaded_event())
    chunks = world.chunks(document)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert [json.loads(c.model_dump_json())["document_id"] for c in chunks] == [document.id] * len(chunks)


# ---------------------------------------------------------------------------------------------
# StatusService
# ---------------------------------------------------------------------------------------------


def chunked(world: World, version: int = 1) -> Document:
    document = world.upload()
    world.documents.items[document.id] = document.model_copy(
        update={"status": DocumentStatus.CHUNKED, "chunk_count": 3, "version": version}
    )
    return document


def indexed(document_id: str, version: int, count: int = 3) -> DocumentIndexed:
    return DocumentIndexed(
        metadata=meta("i"),
        document_id=document_id,
        version=version,
        collection="default",
        indexed_count=count,
    )


def test_indexed_marks_the_record_indexed_once(world: World) -> None:
    document = chunked(world)
    assert world.status.apply(indexed(document.id, 1))
    assert not world.status.apply(indexed(document.id, 1))  # duplicate
    stored = world.documents.get(document.id)
    assert (stored.status, stored.indexed_count) == (DocumentStatus.INDEXED, 3)


def test_an_outcome_for_an_older_version_is_ignored(world: World) -> None:
    document = chunked(world, version=2)
    assert not world.status.apply(indexed(document.id, 1))
    assert world.documents.get(document.id).status == DocumentStatus.CHUNKED


def test_an_index_failure_marks_the_record_failed(world: World) -> None:
    document = chunked(world)
    failed = DocumentFailed(
        metadata=meta("f"),
        document_id=document.id,
        version=1,
        stage="index",
        code="dimension_mismatch",
        reason="x",
    )
    assert world.status.apply(failed)
    stored = world.documents.get(document.id)
    assert stored.status == DocumentStatus.FAILED and stored.failure_reason == "dimension_mismatch: x"


def test_ingest_failures_are_not_applied_twice(world: World) -> None:
    document = chunked(world)
    failed = DocumentFailed(
        metadata=meta("f"), document_id=document.id, version=1, stage="ingest", code="parse_error", reason="x"
    )
    assert not world.status.apply(failed)


def test_unknown_documents_are_ignored(world: World) -> None:
    assert not world.status.apply(indexed("nope", 1))


def test_content_type_is_kept(world: World) -> None:
    document = world.upload("plain words", content_type=ContentType.TEXT)
    assert world.raw.objects[raw_key(document.id, 1)][1] == "text/plain; charset=utf-8"
