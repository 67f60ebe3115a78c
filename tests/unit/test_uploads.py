"""UploadService over in-memory fakes of its ports (no AWS)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.ingest.domain.errors import BlobNotFound, ContentTypeRequired, DocumentTooLarge
from functions.ingest.domain.ports import raw_key
from functions.ingest.domain.uploads import (
    ObjectDigest,
    PresignedPut,
    UploadOutcome,
    UploadService,
    parse_raw_key,
)
from ragline.contracts import (
    ContentType,
    CreateDocumentRequest,
    Document,
    DocumentFailed,
    DocumentStatus,
    DocumentUploaded,
    EventDetail,
    Principal,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ALICE = Principal(user_id="alice", groups=frozenset({"engineering"}), tenant="acme")
BUCKET = "raw-bucket"
DATA = b"%PDF-1.7 pretend this is a large report"


class Documents:
    """The documents table with the conditional writes the use case relies on."""

    def __init__(self) -> None:
        self.items: dict[str, Document] = {}

    def create(self, document: Document, **_: object) -> None:
        assert document.id not in self.items
        self.items[document.id] = document

    def get(self, document_id: str) -> Document | None:
        return self.items.get(document_id)

    def update_status(
        self,
        document_id: str,
        *,
        version: int,
        expected: Collection[DocumentStatus],
        status: DocumentStatus,
        updated_at: datetime,
        failure_reason: str | None = None,
        **_: object,
    ) -> bool:
        current = self.items.get(document_id)
        if current is None or current.version != version or current.status not in expected:
            return False
        changes = {"status": status, "updated_at": updated_at}
        if failure_reason is not None:
            changes["failure_reason"] = failure_reason
        self.items[document_id] = current.model_copy(update=changes)
        return True

    # UploadRecords
    def set_content_hash(self, document_id: str, *, version: int, content_hash: str) -> bool:
        current = self.items.get(document_id)
        if current is None or current.version != version or current.status != DocumentStatus.AWAITING_UPLOAD:
            return False
        self.items[document_id] = current.model_copy(update={"content_hash": content_hash})
        return True


class Bucket:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.presigned: list[tuple[str, str, int, int]] = []
        self.reads = 0

    def presign_put(self, key: str, *, content_type: str, size_bytes: int, expires_in_s: int) -> PresignedPut:
        self.presigned.append((key, content_type, size_bytes, expires_in_s))
        return PresignedPut(url=f"https://s3.example/{key}?signed", headers={"Content-Type": content_type})

    def digest(self, key: str) -> ObjectDigest:
        self.reads += 1
        if key not in self.objects:
            raise BlobNotFound(key)
        data = self.objects[key]
        return ObjectDigest(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


class Publisher:
    def __init__(self, fail: int = 0) -> None:
        self.published: list[EventDetail] = []
        self.fail = fail

    def publish(self, detail: EventDetail) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("EventBridge unavailable")
        self.published.append(detail)


class World:
    def __init__(self, *, max_bytes: int = 1000, publish_failures: int = 0) -> None:
        self.documents = Documents()
        self.bucket = Bucket()
        self.publisher = Publisher(publish_failures)
        self.service = UploadService(
            self.documents,
            self.documents,
            self.bucket,
            self.publisher,
            bucket=BUCKET,
            max_document_bytes=max_bytes,
            url_ttl_s=600,
            clock=lambda: NOW,
            ids=lambda: "doc1",
        )

    def start(self, size: int = len(DATA), content_type: ContentType | None = ContentType.PDF) -> Document:
        request = CreateDocumentRequest(
            title="Report",
            upload=True,
            size_bytes=size,
            content_type=content_type,
            allowed_groups=["engineering"],
            metadata={"year": 2024},
        )
        document, _ = self.service.start(request, ALICE, "corr-1")
        return document

    def arrive(self, data: bytes = DATA, key: str = "raw/doc1/v1/original") -> UploadOutcome:
        self.bucket.objects[key] = data
        return self.service.complete(BUCKET, key, len(data)).outcome


def test_start_records_a_document_awaiting_its_bytes_and_signs_a_put_for_them() -> None:
    world = World()
    request = CreateDocumentRequest(
        title="Report",
        upload=True,
        size_bytes=len(DATA),
        content_type=ContentType.PDF,
        allowed_groups=["engineering"],
    )
    document, target = world.service.start(request, ALICE, "corr-1")

    assert world.documents.items["doc1"] == document
    assert (document.status, document.content_hash, document.size_bytes) == (
        DocumentStatus.AWAITING_UPLOAD,
        None,
        len(DATA),
    )
    assert (document.owner, document.tenant, document.correlation_id) == ("alice", "acme", "corr-1")
    assert world.bucket.presigned == [(raw_key("doc1", 1), "application/pdf", len(DATA), 600)]
    assert target.url.startswith("https://s3.example/raw/doc1/v1/original")
    assert target.expires_at == NOW + timedelta(seconds=600)
    assert world.publisher.published == []  # nothing to ingest until the bytes arrive


def test_a_declared_size_over_the_maximum_is_refused_before_anything_is_stored() -> None:
    world = World(max_bytes=10)
    with pytest.raises(DocumentTooLarge) as raised:
        world.start(size=11)
    assert raised.value.code == "document_too_large" and raised.value.limit_bytes == 10
    assert world.documents.items == {} and world.bucket.presigned == []


def test_an_upload_must_declare_its_content_type() -> None:
    world = World()
    with pytest.raises(ContentTypeRequired):
        world.start(content_type=None)
    assert world.documents.items == {}


def test_the_arrived_bytes_are_hashed_and_announced() -> None:
    world = World()
    world.start()
    assert world.arrive() == UploadOutcome.RECEIVED

    document = world.documents.items["doc1"]
    assert document.status == DocumentStatus.RECEIVED
    assert document.content_hash == hashlib.sha256(DATA).hexdigest()
    (event,) = world.publisher.published
    assert isinstance(event, DocumentUploaded)
    assert (event.document_id, event.version, event.raw_key, event.content_type) == (
        "doc1",
        1,
        "raw/doc1/v1/original",
        ContentType.PDF,
    )
    assert event.metadata.correlation_id == "corr-1"  # the API's, carried by the record


def test_a_redelivered_event_is_ignored() -> None:
    world = World()
    world.start()
    world.arrive()
    assert world.arrive() == UploadOutcome.IGNORED
    assert len(world.publisher.published) == 1


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        ("another-bucket", "raw/doc1/v1/original"),
        (BUCKET, "raw/doc1/v1/original.bak"),
        (BUCKET, "parsed/doc1/v1/text.txt"),
        (BUCKET, "raw/unknown/v1/original"),
        (BUCKET, "raw/doc1/v2/original"),
    ],
)
def test_objects_that_are_not_an_awaited_upload_are_ignored(bucket: str, key: str) -> None:
    world = World()
    world.start()
    world.bucket.objects[key] = DATA
    assert world.service.complete(bucket, key, len(DATA)).outcome == UploadOutcome.IGNORED
    assert world.documents.items["doc1"].status == DocumentStatus.AWAITING_UPLOAD
    assert world.publisher.published == [] and world.bucket.reads == 0


def test_an_inline_documents_original_is_ignored() -> None:
    world = World()
    world.start()
    world.documents.items["doc1"] = world.documents.items["doc1"].model_copy(
        update={"status": DocumentStatus.RECEIVED, "content_hash": "abc"}
    )
    assert world.arrive() == UploadOutcome.IGNORED
    assert world.publisher.published == []


def test_another_size_than_declared_fails_the_document() -> None:
    world = World()
    world.start(size=len(DATA) + 1)
    assert world.arrive() == UploadOutcome.FAILED

    document = world.documents.items["doc1"]
    assert document.status == DocumentStatus.FAILED
    assert document.failure_reason.startswith("size_mismatch: the upload declared")
    (failed,) = world.publisher.published
    assert isinstance(failed, DocumentFailed)
    assert (failed.code, failed.stage, failed.source) == ("size_mismatch", "ingest", "ragline.ingest")
    assert "raw/doc1/v1/original" in world.bucket.objects  # kept: nothing is lost


def test_an_object_over_the_maximum_is_deleted_unread_and_fails_the_document() -> None:
    world = World(max_bytes=len(DATA))
    world.start()
    assert world.arrive(DATA + b"!") == UploadOutcome.FAILED

    assert world.bucket.objects == {} and world.bucket.reads == 0
    document = world.documents.items["doc1"]
    assert document.status == DocumentStatus.FAILED
    assert document.failure_reason.startswith("document_too_large")
    assert [e.code for e in world.publisher.published] == ["document_too_large"]


def test_a_vanished_object_leaves_the_document_waiting() -> None:
    world = World()
    world.start()
    result = world.service.complete(BUCKET, "raw/doc1/v1/original", len(DATA))
    assert result.outcome == UploadOutcome.IGNORED
    assert world.documents.items["doc1"].status == DocumentStatus.AWAITING_UPLOAD


def test_a_failed_publish_is_undone_so_the_retry_announces_the_document() -> None:
    world = World(publish_failures=1)
    world.start()
    with pytest.raises(RuntimeError):
        world.arrive()
    assert world.documents.items["doc1"].status == DocumentStatus.AWAITING_UPLOAD
    assert world.publisher.published == []

    assert world.arrive() == UploadOutcome.RECEIVED  # SQS redelivers the event
    assert world.documents.items["doc1"].status == DocumentStatus.RECEIVED
    assert [type(e) for e in world.publisher.published] == [DocumentUploaded]


def test_a_failed_failure_publish_leaves_the_document_for_the_retry() -> None:
    world = World(publish_failures=1)
    world.start(size=1)
    with pytest.raises(RuntimeError):
        world.arrive()
    assert world.documents.items["doc1"].status == DocumentStatus.AWAITING_UPLOAD
    assert world.arrive() == UploadOutcome.FAILED


@given(document_id=st.from_regex(r"[0-9a-f]{32}", fullmatch=True), version=st.integers(1, 10_000))
def test_raw_keys_parse_back(document_id: str, version: int) -> None:
    assert parse_raw_key(raw_key(document_id, version)) == (document_id, version)


@pytest.mark.parametrize(
    "key", ["raw/a/v0/original", "raw/a/v01/original", "raw/a/b/v1/original", "raw//v1/original", "raw/a/v1/"]
)
def test_other_keys_do_not_parse(key: str) -> None:
    assert parse_raw_key(key) is None
