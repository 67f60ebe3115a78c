"""Collections, content dedupe, listing and the status lifecycle, over in-memory fakes (no AWS)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from functions.ingest.domain.chunking import Chunker
from functions.ingest.domain.collections import CollectionCatalog, CollectionDefaults
from functions.ingest.domain.documents import LIST_READ_BUDGET, DocumentService
from functions.ingest.domain.errors import (
    CollectionAlreadyExists,
    CollectionNotFound,
    InvalidCursor,
    UnsupportedEmbeddingModel,
)
from functions.ingest.domain.pipeline import ChunkingService, ChunkOutcome
from functions.ingest.domain.status import StatusService
from ragline.contracts import (
    Collection,
    CreateCollectionRequest,
    CreateDocumentRequest,
    Document,
    DocumentFailed,
    DocumentIndexed,
    DocumentStatus,
    DocumentUploaded,
    EventMetadata,
    IndexingStarted,
    Principal,
)

from .test_ingest_service import InMemoryBlobs, InMemoryDocuments, Recorder, Unavailable, WordCounter

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ALICE = Principal(user_id="alice", groups=frozenset({"engineering"}), tenant="acme")
BOB = Principal(user_id="bob", groups=frozenset({"engineering"}), tenant="acme")
CAROL = Principal(user_id="carol", groups=frozenset({"finance"}), tenant="acme")
MALLORY = Principal(user_id="mallory", groups=frozenset({"engineering"}), tenant="other")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LONG = "# Keys\n\n" + " ".join(f"Sentence number {i} is here." for i in range(40))


class InMemoryCollections:
    def __init__(self) -> None:
        self.items: dict[tuple[str | None, str], Collection] = {}

    def create(self, tenant: str | None, collection: Collection) -> None:
        if (tenant, collection.name) in self.items:
            raise CollectionAlreadyExists(collection.name)
        self.items[(tenant, collection.name)] = collection

    def get(self, tenant: str | None, name: str) -> Collection | None:
        return self.items.get((tenant, name))

    def list(self, tenant: str | None) -> list[Collection]:
        return sorted((c for (t, _), c in self.items.items() if t == tenant), key=lambda c: c.name)


class Clock:
    """Each reading one second after the previous one (so listing order is creation order)."""

    def __init__(self) -> None:
        self._ticks = count()

    def __call__(self) -> datetime:
        return T0 + timedelta(seconds=next(self._ticks))


class World:
    def __init__(self) -> None:
        clock = Clock()
        self.documents = InMemoryDocuments()
        self.collections = CollectionCatalog(
            InMemoryCollections(), CollectionDefaults(12, 2, MODEL), clock=clock
        )
        self.raw = InMemoryBlobs()
        self.parsed = InMemoryBlobs()
        self.bus = Recorder()
        self.index_queue = Recorder()
        ids = (f"doc{i:03d}" for i in count())
        self.api = DocumentService(
            self.documents,
            self.raw,
            self.bus,
            max_inline_bytes=100_000,
            collections=self.collections,
            clock=clock,
            ids=lambda: next(ids),
        )
        self.chunking = ChunkingService(
            self.documents,
            self.raw,
            self.parsed,
            self.bus,
            self.index_queue,
            Chunker(WordCounter(), max_tokens=12, overlap_tokens=2),
            collections=self.collections,
            clock=clock,
        )
        self.status = StatusService(self.documents, clock=clock)

    def upload(self, text: str = "# Keys\n\nRotate keys.", who: Principal = ALICE, **fields: object):
        fields.setdefault("allowed_groups", ["engineering"])
        request = CreateDocumentRequest(title="Runbook", text=text, **fields)  # type: ignore[arg-type]
        return self.api.create(request, who, "corr-1")

    def uploaded(self, document: Document) -> DocumentUploaded:
        (event,) = [
            e for e in self.bus.sent if isinstance(e, DocumentUploaded) and e.document_id == document.id
        ]
        return event

    def published(self, kind: type) -> list:
        return [e for e in self.bus.sent if isinstance(e, kind)]


@pytest.fixture
def world() -> World:
    return World()


def meta(key: str) -> EventMetadata:
    return EventMetadata(correlation_id="corr-1", idempotency_key=key)


# ---------------------------------------------------------------------------------------------
# Collections
# ---------------------------------------------------------------------------------------------


def test_default_exists_implicitly_with_the_deployment_settings(world: World) -> None:
    (default,) = world.collections.list(ALICE)
    assert (
        default.name,
        default.chunk_max_tokens,
        default.chunk_overlap_tokens,
        default.embedding_model,
    ) == (
        "default",
        12,
        2,
        MODEL,
    )
    assert world.collections.get("default", MALLORY) == default
    with pytest.raises(CollectionAlreadyExists):
        world.collections.create(CreateCollectionRequest(name="default"), ALICE)


def test_collections_belong_to_a_tenant(world: World) -> None:
    created = world.collections.create(
        CreateCollectionRequest(name="legal", chunk_max_tokens=64, chunk_overlap_tokens=8), ALICE
    )
    assert world.collections.get("legal", BOB) == created  # same tenant
    assert [c.name for c in world.collections.list(ALICE)] == ["default", "legal"]
    with pytest.raises(CollectionNotFound):
        world.collections.get("legal", MALLORY)
    assert [c.name for c in world.collections.list(MALLORY)] == ["default"]
    world.collections.create(CreateCollectionRequest(name="legal"), MALLORY)  # theirs, separately
    with pytest.raises(CollectionAlreadyExists):
        world.collections.create(CreateCollectionRequest(name="legal"), BOB)


def test_a_collection_may_only_name_the_served_embedding_model(world: World) -> None:
    with pytest.raises(UnsupportedEmbeddingModel):
        world.collections.create(CreateCollectionRequest(name="big", embedding_model="bge-large"), ALICE)
    same = world.collections.create(CreateCollectionRequest(name="ok", embedding_model=MODEL), ALICE)
    assert same.embedding_model == MODEL


def test_a_document_in_an_unknown_collection_is_refused_and_nothing_stored(world: World) -> None:
    with pytest.raises(CollectionNotFound):
        world.upload(collection="nope")
    assert not world.raw.objects and not world.documents.items and not world.bus.sent


def test_the_worker_chunks_with_the_collections_settings(world: World) -> None:
    world.collections.create(
        CreateCollectionRequest(name="wide", chunk_max_tokens=200, chunk_overlap_tokens=0), ALICE
    )
    narrow = world.upload(LONG).document
    wide = world.upload(LONG, collection="wide", allowed_groups=["engineering"]).document
    narrow_result = world.chunking.process(world.uploaded(narrow))
    wide_result = world.chunking.process(world.uploaded(wide))
    assert narrow_result.chunk_count > 10  # 12-token chunks of ~200 words
    assert wide_result.chunk_count == 2  # 198-token budget


def test_a_documents_collection_that_vanished_fails_it_permanently(world: World) -> None:
    world.collections.create(CreateCollectionRequest(name="gone"), ALICE)
    document = world.upload(collection="gone").document
    world.collections._collections.items.clear()  # type: ignore[attr-defined]
    assert world.chunking.process(world.uploaded(document)).outcome == ChunkOutcome.FAILED
    stored = world.documents.get(document.id)
    assert (stored.status, stored.failure_code) == (DocumentStatus.FAILED, "collection_not_found")


# ---------------------------------------------------------------------------------------------
# Content dedupe
# ---------------------------------------------------------------------------------------------


def test_identical_content_returns_the_existing_document_without_storing_anything(world: World) -> None:
    first = world.upload()
    puts, events = world.raw.puts, len(world.bus.sent)
    again = world.upload(who=BOB)
    assert not first.deduplicated and again.deduplicated
    assert again.document == first.document
    assert (world.raw.puts, len(world.bus.sent), len(world.documents.items)) == (puts, events, 1)


@pytest.mark.parametrize(
    "change",
    [
        {"allowed_groups": ["engineering", "sales"]},
        {"collection": "other"},
        {"text": "# Keys\n\nRotate keys!"},
    ],
)
def test_another_audience_collection_or_content_is_another_document(world: World, change: dict) -> None:
    world.collections.create(CreateCollectionRequest(name="other"), ALICE)
    first = world.upload()
    second = world.upload(**change)
    assert not second.deduplicated and second.document.id != first.document.id


def test_a_failed_holder_is_replaced(world: World) -> None:
    first = world.upload().document
    world.documents.items[first.id] = first.model_copy(update={"status": DocumentStatus.FAILED})
    second = world.upload()
    assert not second.deduplicated and second.document.id != first.id
    assert world.upload().document.id == second.document.id  # the new one holds the content now


def test_a_holder_the_caller_cannot_see_is_never_revealed(world: World) -> None:
    # Alice uploads for finance only (she is not in it); Carol is; Bob is not and gets his own copy.
    mine = world.upload(allowed_groups=["finance"]).document
    assert world.upload(who=CAROL, allowed_groups=["finance"]).document.id == mine.id
    theirs = world.upload(who=BOB, allowed_groups=["finance"])
    assert not theirs.deduplicated and theirs.document.id != mine.id
    assert world.upload(who=MALLORY, allowed_groups=["finance"]).document.id not in (
        mine.id,
        theirs.document.id,
    )


def test_a_concurrent_identical_upload_makes_one_document(world: World) -> None:
    first = world.upload().document
    real_find = world.documents.find_by_content
    world.documents.find_by_content = lambda key, calls=iter([None]): next(calls, real_find(key))  # type: ignore[method-assign]
    raced = world.upload(who=BOB)  # misses the claim on its first look, loses the transaction
    assert raced.deduplicated and raced.document.id == first.id
    assert len(world.documents.items) == 1 and len(world.published(DocumentUploaded)) == 1


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------


def test_listing_pages_newest_first_with_an_opaque_cursor(world: World) -> None:
    ids = [world.upload(f"# Doc {i}\n\nText {i}.").document.id for i in range(5)]
    seen, cursor = [], None
    while True:
        page = world.api.list(ALICE, limit=2, cursor=cursor)
        seen += [d.id for d in page.documents]
        cursor = page.next_cursor
        if cursor is None:
            break
        assert ids[0] not in cursor  # opaque: no raw ids in it
    assert seen == ids[::-1]


def test_listing_filters_and_shows_only_what_the_caller_may_see(world: World) -> None:
    world.collections.create(CreateCollectionRequest(name="legal"), ALICE)
    eng = world.upload("# A\n\nOne.").document
    fin = world.upload("# B\n\nTwo.", allowed_groups=["finance"]).document
    legal = world.upload("# C\n\nThree.", collection="legal").document
    world.upload("# D\n\nFour.", who=MALLORY)
    world.chunking.process(world.uploaded(eng))

    def ids(who: Principal, **filters) -> list[str]:
        return [d.id for d in world.api.list(who, limit=100, **filters).documents]

    assert ids(ALICE) == [legal.id, fin.id, eng.id]  # her own finance document too (owner)
    assert ids(BOB) == [legal.id, eng.id]
    assert ids(CAROL) == [fin.id]
    assert ids(ALICE, collection="legal") == [legal.id]
    assert ids(ALICE, status=DocumentStatus.CHUNKED) == [eng.id]
    assert len(ids(MALLORY)) == 1


def test_a_sparse_listing_stops_at_its_read_budget_with_a_cursor(world: World) -> None:
    for i in range(LIST_READ_BUDGET + 5):
        world.upload(f"# F{i}\n\nx{i}.", allowed_groups=["finance"], who=CAROL)
    page = world.api.list(BOB, limit=10)
    assert page.documents == [] and page.next_cursor is not None
    rest = world.api.list(BOB, limit=10, cursor=page.next_cursor)
    assert rest.documents == [] and rest.next_cursor is None


@pytest.mark.parametrize("cursor", ["garbage!", "eyJwIjoxfQ", "e30"])
def test_cursors_that_were_not_handed_out_are_refused(world: World, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        world.api.list(ALICE, cursor=cursor)


def test_a_cursor_only_continues_the_listing_it_came_from(world: World) -> None:
    for i in range(3):
        world.upload(f"# {i}\n\n{i}.")
    cursor = world.api.list(ALICE, limit=1).next_cursor
    with pytest.raises(InvalidCursor):
        world.api.list(ALICE, limit=1, cursor=cursor, status=DocumentStatus.RECEIVED)


# ---------------------------------------------------------------------------------------------
# Status lifecycle
# ---------------------------------------------------------------------------------------------


def indexing_started(document: Document) -> IndexingStarted:
    return IndexingStarted(metadata=meta("s"), document_id=document.id, version=1, chunk_count=1)


def indexed(document: Document) -> DocumentIndexed:
    return DocumentIndexed(
        metadata=meta("i"), document_id=document.id, version=1, collection="default", indexed_count=1
    )


def test_the_full_lifecycle_records_when_each_stage_began(world: World) -> None:
    document = world.upload().document
    world.chunking.process(world.uploaded(document))
    assert world.status.apply(indexing_started(document))
    assert world.documents.get(document.id).status == DocumentStatus.EMBEDDING
    assert world.status.apply(indexed(document))
    stored = world.documents.get(document.id)
    assert stored.status == DocumentStatus.INDEXED
    stages = ["received", "parsing", "chunked", "embedding", "indexed"]
    assert list(stored.stage_times) == stages
    times = [stored.stage_times[s] for s in stages]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_indexing_started_after_the_outcome_changes_nothing(world: World) -> None:
    document = world.upload().document
    world.chunking.process(world.uploaded(document))
    assert world.status.apply(indexed(document))  # straight from chunked: the start event is late
    before = world.documents.get(document.id)
    assert not world.status.apply(indexing_started(document))
    assert world.documents.get(document.id) == before


def test_an_index_failure_while_embedding_records_its_code(world: World) -> None:
    document = world.upload().document
    world.chunking.process(world.uploaded(document))
    world.status.apply(indexing_started(document))
    failed = DocumentFailed(
        metadata=meta("f"),
        document_id=document.id,
        version=1,
        stage="index",
        code="embedding_rejected",
        reason="x",
    )
    assert world.status.apply(failed)
    stored = world.documents.get(document.id)
    assert (stored.status, stored.failure_code) == (DocumentStatus.FAILED, "embedding_rejected")
    assert "failed" in stored.stage_times


def test_parse_failures_record_their_code(world: World) -> None:
    document = world.upload().document
    world.raw.objects[world.uploaded(document).raw_key] = (b" \n \n", "text/markdown")
    world.chunking.process(world.uploaded(document))
    assert world.documents.get(document.id).failure_code == "empty_document"


def test_a_second_delivery_while_parsing_resumes_the_work(world: World) -> None:
    document = world.upload().document
    world.documents.update_status(
        document.id,
        version=1,
        expected={DocumentStatus.RECEIVED},
        status=DocumentStatus.PARSING,
        updated_at=T0,
    )
    result = world.chunking.process(world.uploaded(document))
    assert result.outcome == ChunkOutcome.CHUNKED


def test_giving_up_fails_the_document_and_announces_it_once(world: World) -> None:
    document = world.upload().document
    event = world.uploaded(document)
    assert world.chunking.give_up(event, Unavailable("S3 is down"))
    assert not world.chunking.give_up(event, Unavailable("S3 is down"))  # a second time: no change
    stored = world.documents.get(document.id)
    assert (stored.status, stored.failure_code) == (DocumentStatus.FAILED, "retries_exhausted")
    assert "S3 is down" in stored.failure_reason
    (failed,) = world.published(DocumentFailed)
    assert (failed.stage, failed.code, failed.document_id) == ("ingest", "retries_exhausted", document.id)


def test_giving_up_never_overrides_an_outcome(world: World) -> None:
    document = world.upload().document
    world.chunking.process(world.uploaded(document))
    world.status.apply(indexed(document))
    assert not world.chunking.give_up(world.uploaded(document), Unavailable("late"))
    assert world.documents.get(document.id).status == DocumentStatus.INDEXED
    assert not world.published(DocumentFailed)
