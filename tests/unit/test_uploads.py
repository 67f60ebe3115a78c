"""UploadService over in-memory fakes of its ports (no AWS)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.ingest.domain.errors import (
    BlobNotFound,
    ContentTypeRequired,
    DocumentTooLarge,
    UploadNotScheduled,
)
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
    UploadDeadline,
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
        failure_code: str | None = None,
        **_: object,
    ) -> bool:
        current = self.items.get(document_id)
        if current is None or current.version != version or current.status not in expected:
            return False
        changes = {"status": status, "updated_at": updated_at}
        if failure_reason is not None:
            changes["failure_reason"] = failure_reason
            changes["failure_code"] = failure_code
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

    def size(self, key: str) -> int | None:
        data = self.objects.get(key)
        return None if data is None else len(data)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


class Deadlines:
    """The uploads queue: what was sent, with its delay."""

    MAX_DELAY_S: ClassVar[int] = 900

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[UploadDeadline, int]] = []
        self.fail = fail

    def send(self, detail: UploadDeadline, *, delay_s: int = 0) -> None:
        if self.fail:
            raise RuntimeError("SQS unavailable")
        assert 0 <= delay_s <= self.MAX_DELAY_S
        self.sent.append((detail, delay_s))


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
    def __init__(
        self,
        *,
        max_bytes: int = 1000,
        publish_failures: int = 0,
        ttl_s: int = 600,
        grace_s: int = 120,
        deadlines: Deadlines | None = None,
        deadline_queue: bool = True,  # False: what wiring builds without RAGLINE_UPLOADS_QUEUE_URL
    ) -> None:
        self.documents = Documents()
        self.bucket = Bucket()
        self.publisher = Publisher(publish_failures)
        self.deadlines = Deadlines() if deadlines is None else deadlines
        self.now = NOW
        self.service = UploadService(
            self.documents,
            self.documents,
            self.bucket,
            self.publisher,
            bucket=BUCKET,
            max_document_bytes=max_bytes,
            url_ttl_s=ttl_s,
            deadlines=self.deadlines if deadline_queue else None,
            grace_s=grace_s,
            clock=lambda: self.now,
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
    assert world.documents.items == {} and world.bucket.presigned == [] and world.deadlines.sent == []


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


# ---------------------------------------------------------------------------------------------
# Deadlines: no presigned upload waits forever
# ---------------------------------------------------------------------------------------------


def test_start_schedules_the_deadline_at_url_expiry_plus_grace() -> None:
    world = World(ttl_s=600, grace_s=120)
    world.start()

    ((deadline, delay_s),) = world.deadlines.sent
    assert (deadline.document_id, deadline.version) == ("doc1", 1)
    assert deadline.due_at == NOW + timedelta(seconds=720)
    assert delay_s == 720  # within SQS's 15 minutes: one message, delivered when due
    assert deadline.metadata.correlation_id == "corr-1"
    assert deadline.metadata.idempotency_key == "doc1:v1:upload-deadline"


@pytest.mark.parametrize(
    "world",
    [World(deadlines=Deadlines(fail=True)), World(deadline_queue=False)],
    ids=["the-queue-refuses", "no-queue-configured"],
)
def test_no_url_is_handed_out_when_the_deadline_cannot_be_scheduled(world: World) -> None:
    with pytest.raises(UploadNotScheduled) as raised:
        world.start()
    assert raised.value.code == "upload_not_scheduled"
    assert world.documents.items == {} and world.bucket.presigned == []


def test_a_deadline_beyond_the_longest_delay_is_chained_until_it_is_due() -> None:
    world = World(ttl_s=900, grace_s=3600)  # due in 4500 s; SQS delays 900 s at most
    world.start()
    assert [delay for _, delay in world.deadlines.sent] == [900]

    for hop in range(1, 5):
        world.now = NOW + timedelta(seconds=900 * hop)  # the last message arrives
        deadline, _ = world.deadlines.sent[-1]
        assert world.service.expire(deadline).outcome == UploadOutcome.RESCHEDULED
        assert world.documents.items["doc1"].status == DocumentStatus.AWAITING_UPLOAD
    assert [delay for _, delay in world.deadlines.sent] == [900, 900, 900, 900, 900]
    assert all(d == world.deadlines.sent[0][0] for d, _ in world.deadlines.sent)  # the same deadline

    world.now = NOW + timedelta(seconds=4500)
    assert world.service.expire(world.deadlines.sent[-1][0]).outcome == UploadOutcome.FAILED
    assert len(world.deadlines.sent) == 5


def test_a_deadline_delivered_a_moment_early_waits_the_rest() -> None:
    world = World(ttl_s=600, grace_s=120)
    world.start()
    ((deadline, _),) = world.deadlines.sent
    world.now = deadline.due_at - timedelta(milliseconds=200)  # another host's clock
    assert world.service.expire(deadline).outcome == UploadOutcome.RESCHEDULED
    assert world.deadlines.sent[-1][1] == 1
    assert world.documents.items["doc1"].status == DocumentStatus.AWAITING_UPLOAD


def due(world: World) -> UploadDeadline:
    """The deadline `start` scheduled, with the clock at it."""
    deadline, _ = world.deadlines.sent[0]
    world.now = deadline.due_at
    return deadline


def test_nothing_uploaded_by_the_deadline_fails_the_document_upload_expired() -> None:
    world = World()
    world.start()
    result = world.service.expire(due(world))

    assert result.outcome == UploadOutcome.FAILED
    document = world.documents.items["doc1"]
    assert (document.status, document.failure_code) == (DocumentStatus.FAILED, "upload_expired")
    assert document.failure_reason.startswith("upload_expired: no bytes arrived by 2024-05-01T12:12:00")
    (failed,) = world.publisher.published
    assert isinstance(failed, DocumentFailed)
    assert (failed.document_id, failed.version, failed.code, failed.stage) == (
        "doc1",
        1,
        "upload_expired",
        "ingest",
    )
    assert failed.metadata.correlation_id == "corr-1"
    assert len(world.deadlines.sent) == 1  # nothing more to wait for


def test_bytes_whose_event_was_lost_are_taken_at_the_deadline() -> None:
    world = World()
    world.start()
    world.bucket.objects["raw/doc1/v1/original"] = DATA  # PUT, but S3's event never came
    result = world.service.expire(due(world))

    assert result.outcome == UploadOutcome.RECEIVED
    document = world.documents.items["doc1"]
    assert document.status == DocumentStatus.RECEIVED
    assert document.content_hash == hashlib.sha256(DATA).hexdigest()
    (event,) = world.publisher.published
    assert isinstance(event, DocumentUploaded)
    assert (event.document_id, event.raw_key) == ("doc1", "raw/doc1/v1/original")


def test_bytes_found_at_the_deadline_are_checked_as_their_event_would_have_been() -> None:
    world = World()
    world.start(size=len(DATA) + 1)
    world.bucket.objects["raw/doc1/v1/original"] = DATA
    assert world.service.expire(due(world)).outcome == UploadOutcome.FAILED
    assert world.documents.items["doc1"].failure_code == "size_mismatch"
    assert [e.code for e in world.publisher.published] == ["size_mismatch"]


def test_bytes_that_vanish_while_the_deadline_reads_them_expire_the_document() -> None:
    world = World()
    world.start()
    world.bucket.objects["raw/doc1/v1/original"] = DATA

    def gone(key: str) -> ObjectDigest:  # deleted between the HEAD and the read
        raise BlobNotFound(key)

    world.bucket.digest = gone
    assert world.service.expire(due(world)).outcome == UploadOutcome.FAILED
    assert world.documents.items["doc1"].failure_code == "upload_expired"


@pytest.mark.parametrize(
    "status", [DocumentStatus.RECEIVED, DocumentStatus.FAILED, DocumentStatus.CHUNKED, DocumentStatus.INDEXED]
)
def test_a_deadline_for_a_document_that_moved_on_changes_nothing(status: DocumentStatus) -> None:
    world = World()
    world.start()
    moved = world.documents.items["doc1"].model_copy(update={"status": status})
    world.documents.items["doc1"] = moved
    result = world.service.expire(due(world))

    assert result.outcome == UploadOutcome.IGNORED
    assert world.documents.items["doc1"] == moved
    assert world.publisher.published == [] and world.bucket.reads == 0


@pytest.mark.parametrize(("document_id", "version"), [("doc1", 2), ("unknown", 1)])
def test_a_deadline_for_another_version_or_no_record_changes_nothing(document_id: str, version: int) -> None:
    world = World()
    world.start()
    deadline = due(world).model_copy(update={"document_id": document_id, "version": version})
    assert world.service.expire(deadline).outcome == UploadOutcome.IGNORED
    assert world.documents.items["doc1"].status == DocumentStatus.AWAITING_UPLOAD
    assert world.publisher.published == []


def test_a_redelivered_deadline_changes_nothing() -> None:
    world = World()
    world.start()
    deadline = due(world)
    outcomes = [world.service.expire(deadline).outcome for _ in range(3)]  # SQS: at least once

    assert outcomes == [UploadOutcome.FAILED, UploadOutcome.IGNORED, UploadOutcome.IGNORED]
    assert [e.code for e in world.publisher.published] == ["upload_expired"]
    assert len(world.deadlines.sent) == 1


def test_a_failed_publish_at_the_deadline_leaves_the_document_for_the_retry() -> None:
    world = World(publish_failures=1)
    world.start()
    deadline = due(world)
    with pytest.raises(RuntimeError):
        world.service.expire(deadline)
    assert world.documents.items["doc1"].status == DocumentStatus.AWAITING_UPLOAD
    assert world.service.expire(deadline).outcome == UploadOutcome.FAILED  # SQS redelivers it


def test_a_deadline_whose_record_was_never_written_finds_nothing() -> None:
    """The deadline is sent before the record is written: the write may still fail."""
    world = World()

    def unavailable(document: Document, **_: object) -> None:
        raise RuntimeError("DynamoDB unavailable")

    world.documents.create = unavailable
    with pytest.raises(RuntimeError):
        world.start()
    assert world.service.expire(due(world)).outcome == UploadOutcome.IGNORED
    assert world.publisher.published == []


@given(document_id=st.from_regex(r"[0-9a-f]{32}", fullmatch=True), version=st.integers(1, 10_000))
def test_raw_keys_parse_back(document_id: str, version: int) -> None:
    assert parse_raw_key(raw_key(document_id, version)) == (document_id, version)


@pytest.mark.parametrize(
    "key", ["raw/a/v0/original", "raw/a/v01/original", "raw/a/b/v1/original", "raw//v1/original", "raw/a/v1/"]
)
def test_other_keys_do_not_parse(key: str) -> None:
    assert parse_raw_key(key) is None
