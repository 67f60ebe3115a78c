"""Fault tests of ingestion: the embedding endpoint failing, stalling or down while documents go through the
whole asynchronous pipeline.

Everything between the API and the search index is the real code, in-process, against moto (`aws_platform`:
queues with their DLQ redrive policies and bus rules from ragline.topology): the ingest API handler, the ingest
worker, the index worker with the real embedding client (HTTP transport, circuit breaker) and the status
consumer, fed by the local platform's event-source-mapping emulation (`QueuePoller`: batches, partial batch
failures, visibility timeouts, redrive to the DLQ after maxReceiveCount). The model is the real embedding server
(`sagemaker/embedding/serve.py`) as a process, either behind a proxy that fails and stalls a share of its calls
(tests/support/faulty_http.py) or stopped and started again."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import lancedb
import pytest

from functions.index import wiring as index_wiring
from functions.index.adapters.embedder import EndpointEmbedder
from functions.index.handlers import worker as index_worker
from functions.ingest import wiring as ingest_wiring
from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.handlers import api, status
from functions.ingest.handlers import worker as ingest_worker
from ragline.contracts import Chunk, DocumentFailed, DocumentStatus
from ragline.endpoints import EmbeddingClient, State
from ragline.endpoints.embedding import embedding_client
from ragline.endpoints.wiring import http_client_for
from ragline.local.harness import ModelServer
from ragline.local.lambda_runtime import LocalFunction
from ragline.local.sqs_runner import QueuePoller
from ragline.search.lance import LanceIndex
from ragline.search.port import IndexedChunk
from ragline.settings import Settings
from ragline.topology import BUS_NAME, TOPOLOGY, dlq_name, physical_name
from tests.support.documents import paragraph
from tests.support.faulty_http import FaultPlan, FaultyProxy, Verdict

from .conftest import OBSERVER_QUEUE, REGION, AwsPlatform
from .test_ingest_handlers import ENGINEER, TOKENIZER, rest_event

pytestmark = pytest.mark.models

QUEUES = ("ingest", "index", "ingest-status")  # the SQS-triggered functions a document passes through
DIMENSION = 384
# Small chunks (as in test_ingest_lifecycle), so that a long document (about 50 chunks) needs two embedding calls
# of 32 texts (production's batch) when the index worker handles it alone.
CHUNKING = {"chunk_max_tokens": 24, "chunk_overlap_tokens": 4}

# Time, scaled down from production (ragline/topology.py, ragline/settings.py) where the proportions matter:
# - A record that fails comes back after the index queue's visibility timeout: 360 s in production, above the
#   worker's 300 s Lambda timeout so that a record is never redelivered while a worker still holds it. 4 s
#   here, so that retries happen within the test; most batches take well under that (a stalled call costs
#   2 s). The pollers take turns in one thread, so a batch that overruns it is never handed out twice: its
#   failed records only come back sooner.
# - While the circuit is open the worker fails its records fast, and they come back one visibility timeout
#   later. Production's cool-down (30 s) is a twelfth of that timeout, so a record's next delivery always finds
#   the cool-down over and the circuit letting a probe through: one open period costs a record at most one of
#   its deliveries (maxReceiveCount: 3, production's, kept). The cool-down here is the same twelfth: 0.33 s.
# - The failure rate (0.5), minimum number of calls (5) and window (60 s) of the breaker are production's.
# - The client's timeout (30 s) cannot shrink as much: a real call of ten short texts takes up to half a second
#   on this 2-core machine when it is busy. 2 s, and a stalled call is held half a second longer.
VISIBILITY_S = 4
OPEN_S = 0.33
TIMEOUT_S = 2.0
# The first test is about retries through SQS with the circuit closed; the second opens it on purpose. So faults
# are spaced (`spacing`: no run of five calls or more is half faults, and the breaker opens at half) and each
# distinct request meets at most one (`faults_per_request`): a record whose own call failed succeeds on its next
# delivery, and none uses up its deliveries by bad luck. About a third of the calls could meet a fault; about a
# fifth do. A record fails a delivery when its batch's call fails and then its own.
FAULTS = FaultPlan(
    fail_share=0.3, stall_share=0.03, stall_s=TIMEOUT_S + 0.5, seed=4, faults_per_request=1, spacing=2
)


# --------------------------------------------------------------------------------------------
# The real embedding server, as a process that can be stopped and started again on the same port
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    # One torch thread: the server shares two cores with this process, and torch's default pool (a thread
    # per core, spinning while it waits) used 7x the CPU time for the same calls here.
    server = ModelServer(
        "embedding", tmp_path_factory.mktemp("embedding") / "server.log", env={"OMP_NUM_THREADS": "1"}
    )
    with server:
        yield server


# --------------------------------------------------------------------------------------------
# The pipeline, driven as the local platform drives it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One ChunksReady handed to the index worker, and whether the worker reported it failed."""

    document_id: str
    receive_count: int
    failed: bool


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class CountingIndex(LanceIndex):
    """The LanceDB index, counting the times each chunk id was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: Counter[str] = Counter()

    def upsert(self, items: Sequence[IndexedChunk]) -> None:
        super().upsert(items)
        self.writes.update(item.chunk.chunk_id for item in items)


class Pipeline:
    """The ingest API, ingest worker, index worker and status consumer over moto, the search index in a LanceDB
    directory, the embedding client built from `settings`; a poller per queue as `ragline dev` runs them."""

    def __init__(self, p: AwsPlatform, settings: Settings, index_dir: Path, http: httpx.Client) -> None:
        self.p = p
        self.client: EmbeddingClient = embedding_client(settings, http=http)
        self.deliveries: list[Delivery] = []
        services = ingest_wiring.build(
            settings, s3=p.s3, dynamodb=p.dynamodb, events=p.events, sqs=p.sqs, tokenizer=TOKENIZER
        )
        self._api = api.create_app(
            lambda: services.documents,
            collections=lambda: services.collections,
            idempotency=lambda: services.idempotency,
        )
        self._db = lancedb.connect(index_dir, read_consistency_interval=timedelta(0))
        self.index = CountingIndex(self._db, "chunks", dimension=DIMENSION)
        indexing = index_wiring.build(
            settings, s3=p.s3, events=p.events, embedder=EndpointEmbedder(self.client), index=self.index
        )
        handlers: dict[str, Handler] = {
            "ingest": ingest_worker.make_handler(lambda: services.chunking),
            "index": self._recording(index_worker.make_handler(lambda: indexing)),
            "ingest-status": status.make_handler(lambda: services.status),
        }
        self._pollers = {
            queue: QueuePoller(
                p.sqs,
                TOPOLOGY.queue(queue),
                p.queue_urls[queue],
                p.queue_arns[queue],
                LocalFunction(TOPOLOGY.consumer_of(queue), handler=handlers[queue]),
                threading.Event(),
                REGION,
            )
            for queue in QUEUES
        }
        self._documents = DynamoDocumentRepository(p.dynamodb, settings.documents_table)

    def _recording(self, handler: Handler) -> Handler:
        def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
            response = handler(event, context)
            failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
            self.deliveries += [
                Delivery(
                    json.loads(r["body"])["detail"]["document_id"],
                    int(r["attributes"]["ApproximateReceiveCount"]),
                    r["messageId"] in failed,
                )
                for r in event["Records"]
            ]
            return response

        return invoke

    def upload(self, title: str, text: str, lambda_context: Any) -> str:
        body = {"title": title, "text": text, "allowed_groups": ["engineering"]}
        response = self._api.resolve(
            rest_event("POST", "/v1/documents", body=body, claims=ENGINEER), lambda_context
        )
        assert response["statusCode"] == 202, response["body"]
        return json.loads(response["body"])["document_id"]

    def poll(self, *queues: str) -> int:
        """One receive per queue (all of them unless named), as each queue's poller does in turn; the number of
        messages handled."""
        return sum(self._pollers[queue].poll_once() for queue in queues or QUEUES)

    def ingest(self, documents: list[tuple[str, str]], lambda_context: Any) -> list[str]:
        """Uploads the documents through the API ten at a time, the functions handling what has arrived in
        between (moto's SQS does work in proportion to a queue's length on every send and receive): the ingest
        worker first, so that the index worker gets full batches."""
        ids: list[str] = []
        for start in range(0, len(documents), 10):
            ids += [self.upload(title, text, lambda_context) for title, text in documents[start : start + 10]]
            while self.poll("ingest"):
                pass
            while self.poll():
                pass
        return ids

    def drain(self, timeout_s: float = 60) -> None:
        """Polls until every queue is empty, messages waiting out a visibility timeout included."""
        deadline = time.monotonic() + timeout_s
        while self.poll() or any(self.messages(self.p.queue_urls[queue]) for queue in QUEUES):
            if time.monotonic() > deadline:
                pytest.fail(f"queues not drained in {timeout_s}s")
            time.sleep(0.05)

    def messages(self, url: str) -> int:
        """Messages in a queue, visible or in flight."""
        attributes = self.p.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def dead_letters(self) -> dict[str, int]:
        return {
            queue: self.messages(self.p.sqs.get_queue_url(QueueName=dlq_name(queue))["QueueUrl"])
            for queue in QUEUES
        }

    def document(self, document_id: str) -> tuple[DocumentStatus, int | None, int | None]:
        document = self._documents.get(document_id)
        assert document is not None
        return document.status, document.chunk_count, document.indexed_count

    def expected_chunk_ids(self) -> list[str]:
        """Every chunk id in the parsed bucket's chunk files, sorted."""
        bucket = self.p.settings.parsed_bucket
        ids = []
        for page in self.p.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/chunks.jsonl"):
                    lines = self.p.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().splitlines()
                    ids += [Chunk.model_validate_json(line).chunk_id for line in lines]
        return sorted(ids)

    def indexed_rows(self) -> list[dict[str, Any]]:
        """Every row of the search index (duplicates kept), by chunk id."""
        table = self._db.open_table("chunks")
        return table.to_arrow().select(["chunk_id", "vector"]).sort_by("chunk_id").to_pylist()


def prepare(p: AwsPlatform) -> None:
    """Two changes to the platform the fixture built, for this module's tests only:
    - the index queue hides a failed record for VISIBILITY_S (production: 360 s, see the top of the module);
    - the observer queue gets only DocumentFailed (from any context), not every event: moto's EventBridge
      does a few ms of work per event and target, and these tests publish about a thousand events."""
    p.sqs.set_queue_attributes(
        QueueUrl=p.queue_urls["index"], Attributes={"VisibilityTimeout": str(VISIBILITY_S)}
    )
    pattern = {"source": [{"prefix": "ragline."}], "detail-type": [DocumentFailed.DETAIL_TYPE]}
    p.events.put_rule(
        Name=physical_name(OBSERVER_QUEUE), EventBusName=BUS_NAME, EventPattern=json.dumps(pattern)
    )


def settings_for(p: AwsPlatform, endpoint: str) -> Settings:
    return p.settings.model_copy(
        update={
            "embedding_backend": "http",
            "embedding_endpoint": endpoint,
            "embedding_dimension": DIMENSION,
            **CHUNKING,
            "endpoint_timeout_s": TIMEOUT_S,
            "breaker_failure_rate": 0.5,
            "breaker_minimum_calls": 5,
            "breaker_window_s": 60.0,
            "breaker_open_s": OPEN_S,
        }
    )


def documents_for(count: int) -> list[tuple[str, str]]:
    """(title, text) of `count` generated documents (tests/support/documents.py, one seed each). Most are two
    sentences, one to four chunks at CHUNKING. Every twentieth is eight paragraphs, about 50 chunks: when the
    index worker indexes it on its own it makes two embedding calls and writes the first call's chunks before it
    makes the second, so a fault there leaves the document half written for a retry to redo. No document needs
    more than two calls, so each call may fail once without using up its three deliveries. The model server's
    CPU time is much of the test's budget, so the rest stay small."""
    documents = []
    for i in range(count):
        rng = random.Random(i)
        if i % 20 == 19:
            documents.append((f"Runbook {i}", "\n\n".join(paragraph(rng, f"D{i}.{p}", 6) for p in range(8))))
        else:
            documents.append((f"Note {i}", paragraph(rng, f"D{i}", 2)))
    return documents


def transitions(caplog: pytest.LogCaptureFixture, endpoint: str) -> list[str]:
    return [r.to_state for r in caplog.records if getattr(r, "endpoint", None) == endpoint]


def assert_indexed_once_each(pipeline: Pipeline, document_ids: list[str]) -> None:
    """Every document `indexed` with all its chunks, nothing dead-lettered or failed, and the search index
    holding exactly the chunks of the parsed bucket's chunk files: none missing, none twice."""
    documents = {document_id: pipeline.document(document_id) for document_id in document_ids}
    not_indexed = {d: v for d, v in documents.items() if v[0] is not DocumentStatus.INDEXED}
    assert not not_indexed, f"{len(not_indexed)} documents not indexed, e.g. {list(not_indexed.items())[:3]}"
    assert all(chunks and indexed == chunks for _, chunks, indexed in documents.values())

    assert pipeline.dead_letters() == dict.fromkeys(QUEUES, 0)
    assert pipeline.messages(pipeline.p.queue_urls[OBSERVER_QUEUE]) == 0  # no DocumentFailed on the bus

    expected = pipeline.expected_chunk_ids()
    rows = pipeline.indexed_rows()
    assert len(expected) == sum(chunks or 0 for _, chunks, _ in documents.values())
    assert [row["chunk_id"] for row in rows] == expected
    assert all(len(row["vector"]) == DIMENSION for row in rows)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with http_client_for(Settings(endpoint_timeout_s=TIMEOUT_S)) as client:
        yield client


@pytest.fixture
def documents() -> list[tuple[str, str]]:
    return documents_for(200)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_200_documents_are_indexed_once_each_while_the_endpoint_fails_and_stalls_calls(
    aws_platform: AwsPlatform,
    embedding_server: ModelServer,
    documents: list[tuple[str, str]],
    http: httpx.Client,
    tmp_path: Path,
    lambda_context,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    p = aws_platform
    prepare(p)
    with FaultyProxy(embedding_server.url, FAULTS) as proxy:
        pipeline = Pipeline(p, settings_for(p, proxy.url), tmp_path / "index", http)
        document_ids = pipeline.ingest(documents, lambda_context)
        pipeline.drain()

    assert len(set(document_ids)) == 200
    assert_indexed_once_each(pipeline, document_ids)
    # The faults happened, and the records they hit went round again through SQS.
    assert proxy.counts[Verdict.FAIL] > 0 and proxy.counts[Verdict.STALL] > 0, proxy.counts
    retried = {d.document_id for d in pipeline.deliveries if d.receive_count > 1}
    assert len(retried) >= 5 and retried == {d.document_id for d in pipeline.deliveries if d.failed}
    assert {d.document_id for d in pipeline.deliveries if not d.failed} == set(document_ids)
    # Some retries rewrote chunks a failed delivery had already written (a long document's first call went
    # through, its second did not), and the index still holds them once each.
    assert any(writes > 1 for writes in pipeline.index.writes.values())
    assert transitions(caplog, proxy.url) == []  # as planned: every failed delivery was a fault of its own


def test_documents_wait_out_an_embedding_outage_and_are_indexed_when_it_is_back(
    aws_platform: AwsPlatform,
    embedding_server: ModelServer,
    documents: list[tuple[str, str]],
    http: httpx.Client,
    tmp_path: Path,
    lambda_context,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    p = aws_platform
    prepare(p)
    pipeline = Pipeline(p, settings_for(p, embedding_server.url), tmp_path / "index", http)
    breaker = pipeline.client.breaker
    assert breaker is not None

    embedding_server.stop()
    try:
        document_ids = [pipeline.upload(title, text, lambda_context) for title, text in documents[:20]]
        while pipeline.poll("ingest"):
            pass
        while {d.document_id for d in pipeline.deliveries if d.failed} != set(document_ids):
            assert pipeline.poll("index")  # every record fails once: refused, then the circuit is open
        assert breaker.state is State.OPEN
    finally:
        embedding_server.start()

    pipeline.drain()

    assert_indexed_once_each(pipeline, document_ids)
    assert breaker.state is State.CLOSED
    states = transitions(caplog, embedding_server.url)
    assert states[0] == "open" and states[-2:] == ["half_open", "closed"], states
    # One outage cost each record one delivery: the next one came after the cool-down, and the probe closed it.
    assert sorted(d.receive_count for d in pipeline.deliveries if not d.failed) == [2] * len(document_ids)
