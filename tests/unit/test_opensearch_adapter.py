"""The OpenSearch adapter's exact requests, against a fake connection that records what the real
client serialises and answers with response bodies shaped like OpenSearch's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.credentials import Credentials
from opensearchpy import Connection, OpenSearch, RequestsAWSV4SignerAuth, RequestsHttpConnection

from ragline.contracts import Chunk
from ragline.search.opensearch import (
    BulkWriteError,
    HnswParams,
    OpenSearchIndex,
    SearchIndexError,
    opensearch_client,
)
from ragline.search.port import IndexedChunk, SearchFilter

ALIAS = "ragline-chunks"


@dataclass
class Sent:
    method: str
    url: str
    params: dict[str, Any]
    body: Any


@dataclass
class FakeCluster:
    """Answers queued (status, body) pairs in order and records every request."""

    responses: list[tuple[int, Any]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    def answer(self, status: int, body: Any = None) -> FakeCluster:
        self.responses.append((status, body if body is not None else {}))
        return self

    def client(self) -> OpenSearch:
        cluster = self

        class FakeConnection(Connection):
            def perform_request(
                self, method, url, params=None, body=None, timeout=None, ignore=(), headers=None
            ):
                query = {k: v.decode() if isinstance(v, bytes) else v for k, v in (params or {}).items()}
                cluster.sent.append(Sent(method, url, query, _decode(body)))
                status, payload = cluster.responses.pop(0)
                raw = json.dumps(payload)
                if not 200 <= status < 300 and status not in ignore:
                    self._raise_error(status, raw, "application/json")
                return status, {"content-type": "application/json"}, raw

        return OpenSearch(hosts=[{"host": "search.example", "port": 443}], connection_class=FakeConnection)


def _decode(body: bytes | None) -> Any:
    if not body:
        return None
    text = body.decode() if isinstance(body, bytes) else body
    lines = [line for line in text.split("\n") if line]
    return json.loads(text) if len(lines) == 1 else [json.loads(line) for line in lines]


def chunk(ordinal: int = 0, **overrides: Any) -> Chunk:
    fields = dict(
        document_id="doc1",
        version=2,
        ordinal=ordinal,
        collection="handbook",
        title="Leave policy",
        text="Employees accrue leave monthly.",
        token_count=5,
        heading_path=["HR", "Leave"],
        char_start=0,
        char_end=31,
        allowed_groups=["staff"],
        tenant="acme",
        metadata={"year": 2024, "public": False},
    )
    return Chunk(**(fields | overrides))


def index(cluster: FakeCluster, **kwargs: Any) -> OpenSearchIndex:
    return OpenSearchIndex(cluster.client(), ALIAS, dimension=4, **kwargs)


def hit(c: Chunk, score: float) -> dict[str, Any]:
    return {
        "_index": f"{ALIAS}-v1",
        "_id": c.chunk_id,
        "_score": score,
        "_source": c.model_dump(mode="json") | {"chunk_id": c.chunk_id},
    }


def search_response(*hits: dict[str, Any], failed: int = 0) -> dict[str, Any]:
    shards: dict[str, Any] = {"total": 2, "successful": 2 - failed, "skipped": 0, "failed": failed}
    if failed:
        shards["failures"] = [
            {
                "shard": 1,
                "index": f"{ALIAS}-v1",
                "node": "n1",
                "reason": {"type": "node_not_connected_exception", "reason": "gone"},
            }
        ]
    return {
        "took": 3,
        "timed_out": False,
        "_shards": shards,
        "hits": {"max_score": hits[0]["_score"] if hits else None, "hits": list(hits)},
    }


STAFF_ACME = SearchFilter(groups_any=frozenset({"staff", "admins"}), tenant="acme")
EXPECTED_ACL = [{"terms": {"allowed_groups": ["admins", "staff"]}}, {"term": {"tenant": "acme"}}]


# ------------------------------------------------------------------------------------- ensure_index


def test_ensure_index_creates_the_concrete_index_with_the_alias():
    cluster = (
        FakeCluster().answer(404).answer(404).answer(200, {"acknowledged": True, "index": f"{ALIAS}-v1"})
    )
    index(cluster).ensure_index()

    assert [(s.method, s.url) for s in cluster.sent] == [
        ("HEAD", f"/_alias/{ALIAS}"),
        ("HEAD", f"/{ALIAS}"),
        ("PUT", f"/{ALIAS}-v1"),
    ]
    body = cluster.sent[2].body
    assert body["aliases"] == {ALIAS: {}}
    assert body["settings"] == {"index": {"knn": True, "knn.algo_param.ef_search": 100}}
    props = body["mappings"]["properties"]
    assert props["vector"] == {
        "type": "knn_vector",
        "dimension": 4,
        "method": {
            "name": "hnsw",
            "engine": "faiss",
            "space_type": "innerproduct",
            "parameters": {"m": 16, "ef_construction": 128},
        },
    }
    assert props["text"] == {"type": "text", "analyzer": "english"}
    assert props["title"] == {"type": "text", "analyzer": "english"}
    assert props["metadata"] == {"type": "flat_object"}
    for name in ("allowed_groups", "tenant", "collection", "document_id", "chunk_id"):
        assert props[name] == {"type": "keyword"}
    assert props["version"]["type"] == props["ordinal"]["type"] == "integer"
    # Everything a Chunk has is mapped, so hits rebuild it and strict mapping accepts what upsert writes.
    assert set(Chunk.model_fields) <= set(props)


def test_ensure_index_lucene_has_no_ef_search_setting():
    body = index(FakeCluster(), hnsw=HnswParams(engine="lucene", space_type="cosinesimil")).index_body()
    assert body["settings"] == {"index": {"knn": True}}
    assert body["mappings"]["properties"]["vector"]["method"]["engine"] == "lucene"


def test_ensure_index_does_nothing_when_the_alias_exists():
    cluster = FakeCluster().answer(200)
    index(cluster).ensure_index()
    assert [(s.method, s.url) for s in cluster.sent] == [("HEAD", f"/_alias/{ALIAS}")]


def test_ensure_index_tolerates_a_concurrent_create():
    error = {
        "error": {"type": "resource_already_exists_exception", "reason": "index already exists"},
        "status": 400,
    }
    cluster = FakeCluster().answer(404).answer(404).answer(400, error)
    index(cluster).ensure_index()
    assert len(cluster.sent) == 3


# ------------------------------------------------------------------------------------- writes


def test_upsert_sends_one_bulk_request_keyed_by_chunk_id():
    cluster = FakeCluster().answer(
        200,
        {
            "took": 5,
            "errors": False,
            "items": [
                {"index": {"_id": "doc1:v2:0", "status": 201}},
                {"index": {"_id": "doc1:v2:1", "status": 200}},
            ],
        },
    )
    index(cluster).upsert(
        [IndexedChunk(chunk(0), [3.0, 4.0, 0.0, 0.0]), IndexedChunk(chunk(1), [0, 0, 0, 2])]
    )

    [sent] = cluster.sent
    assert (sent.method, sent.url, sent.params) == ("POST", "/_bulk", {"refresh": "wait_for"})
    action, source, action2, source2 = sent.body
    assert action == {"index": {"_index": ALIAS, "_id": "doc1:v2:0"}}
    assert action2 == {"index": {"_index": ALIAS, "_id": "doc1:v2:1"}}
    assert source == chunk(0).model_dump(mode="json") | {
        "chunk_id": "doc1:v2:0",
        "vector": [0.6, 0.8, 0.0, 0.0],
    }
    assert source2["vector"] == [0.0, 0.0, 0.0, 1.0]


def test_upsert_raises_with_the_ids_of_failed_items():
    cluster = FakeCluster().answer(
        200,
        {
            "took": 5,
            "errors": True,
            "items": [
                {"index": {"_id": "doc1:v2:0", "status": 201, "result": "created"}},
                {
                    "index": {
                        "_id": "doc1:v2:1",
                        "status": 429,
                        "error": {
                            "type": "es_rejected_execution_exception",
                            "reason": "rejected execution of coordinating operation",
                        },
                    }
                },
                {
                    "index": {
                        "_id": "doc1:v2:2",
                        "status": 400,
                        "error": {
                            "type": "mapper_parsing_exception",
                            "reason": "failed to parse field [vector]",
                        },
                    }
                },
            ],
        },
    )
    items = [IndexedChunk(chunk(i), [1, 0, 0, 0]) for i in range(3)]

    with pytest.raises(BulkWriteError) as raised:
        index(cluster).upsert(items)

    assert set(raised.value.failed) == {"doc1:v2:1", "doc1:v2:2"}
    assert "es_rejected_execution_exception" in raised.value.failed["doc1:v2:1"]
    assert len(cluster.sent) == 1  # no retry by hand: the queue redelivers the batch


def test_upsert_rejects_a_vector_of_the_wrong_dimension():
    cluster = FakeCluster()
    with pytest.raises(ValueError):
        index(cluster).upsert([IndexedChunk(chunk(), [1, 0, 0])])
    assert cluster.sent == []


def test_upsert_of_nothing_sends_nothing():
    cluster = FakeCluster()
    index(cluster).upsert([])
    assert cluster.sent == []


@pytest.mark.parametrize(
    ("version", "terms"),
    [
        (None, [{"term": {"document_id": "doc1"}}]),
        (2, [{"term": {"document_id": "doc1"}}, {"term": {"version": 2}}]),
    ],
)
def test_delete_document_deletes_by_query(version, terms):
    cluster = FakeCluster().answer(
        200, {"took": 9, "timed_out": False, "total": 3, "deleted": 3, "failures": []}
    )
    assert index(cluster).delete_document("doc1", version) == 3

    [sent] = cluster.sent
    assert (sent.method, sent.url) == ("POST", f"/{ALIAS}/_delete_by_query")
    assert sent.params == {"refresh": "true", "conflicts": "proceed"}
    assert sent.body == {"query": {"bool": {"filter": terms}}}


def test_delete_document_raises_on_failures():
    cluster = FakeCluster().answer(
        200, {"deleted": 1, "failures": [{"index": ALIAS, "cause": {"type": "x"}}]}
    )
    with pytest.raises(SearchIndexError):
        index(cluster).delete_document("doc1")


# ------------------------------------------------------------------------------------- reads


def test_keyword_search_filters_inside_the_bool_query_and_rebuilds_chunks():
    found = chunk(3)
    cluster = FakeCluster().answer(200, search_response(hit(found, 7.25)))
    flt = SearchFilter(
        groups_any=frozenset({"staff", "admins"}),
        tenant="acme",
        collection="handbook",
        metadata={"year": 2024, "public": False},
    )

    results = index(cluster).keyword_search("annual leave", flt, 20)

    [sent] = cluster.sent
    assert (sent.method, sent.url) == ("POST", f"/{ALIAS}/_search")
    assert sent.body == {
        "size": 20,
        "track_total_hits": False,
        "_source": {"excludes": ["vector"]},
        "query": {
            "bool": {
                "must": [{"multi_match": {"query": "annual leave", "fields": ["text", "title^2"]}}],
                "filter": EXPECTED_ACL
                + [
                    {"term": {"collection": "handbook"}},
                    {"term": {"metadata.public": False}},
                    {"term": {"metadata.year": 2024}},
                ],
            }
        },
    }
    assert [(r.chunk, r.score) for r in results] == [(found, 7.25)]


def test_vector_search_puts_the_filter_inside_the_knn_clause():
    found = chunk(1)
    cluster = FakeCluster().answer(200, search_response(hit(found, 1.8)))

    results = index(cluster).vector_search([0.0, 2.0, 0.0, 0.0], STAFF_ACME, 8)

    [sent] = cluster.sent
    assert sent.body == {
        "size": 8,
        "track_total_hits": False,
        "_source": {"excludes": ["vector"]},
        "query": {
            "knn": {
                "vector": {
                    "vector": [0.0, 1.0, 0.0, 0.0],
                    "k": 8,
                    "filter": {"bool": {"filter": EXPECTED_ACL}},
                }
            }
        },
    }
    # faiss inner product score 1 + ip for ip >= 0; reported as cosine similarity.
    assert results[0].chunk == found
    assert results[0].score == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("hnsw", "engine_score", "cosine"),
    [
        (HnswParams(), 0.5, -1.0),  # innerproduct below zero: 1 / (1 - ip)
        (HnswParams(space_type="cosinesimil"), 0.75, 0.5),  # (1 + cos) / 2
    ],
)
def test_vector_scores_are_cosine_similarity(hnsw, engine_score, cosine):
    cluster = FakeCluster().answer(200, search_response(hit(chunk(), engine_score)))
    [result] = index(cluster, hnsw=hnsw).vector_search([1, 0, 0, 0], STAFF_ACME, 1)
    assert result.score == pytest.approx(cosine)


def test_a_caller_without_tenant_only_sees_chunks_without_tenant():
    cluster = FakeCluster().answer(200, search_response())
    index(cluster).keyword_search("q", SearchFilter(groups_any=frozenset({"staff"})), 5)
    assert cluster.sent[0].body["query"]["bool"]["filter"] == [
        {"terms": {"allowed_groups": ["staff"]}},
        {"bool": {"must_not": [{"exists": {"field": "tenant"}}]}},
    ]


def test_a_caller_without_groups_never_queries():
    cluster = FakeCluster()
    nobody = SearchFilter(groups_any=frozenset(), tenant="acme")
    assert index(cluster).keyword_search("q", nobody, 5) == []
    assert index(cluster).vector_search([1, 0, 0, 0], nobody, 5) == []
    assert cluster.sent == []


def test_shard_failures_raise_rather_than_return_part_of_the_corpus():
    cluster = FakeCluster().answer(200, search_response(hit(chunk(), 2.0), failed=1))
    with pytest.raises(SearchIndexError, match="1 of 2 shards"):
        index(cluster).keyword_search("leave", STAFF_ACME, 5)


# ------------------------------------------------------------------------------------- client


def test_client_signs_with_sigv4_over_tls():
    client = opensearch_client(
        "https://search-ragline.us-east-1.es.amazonaws.com", "us-east-1", Credentials("AKIDEXAMPLE", "secret")
    )
    [connection] = client.transport.connection_pool.connections
    assert isinstance(connection, RequestsHttpConnection)
    assert connection.host == "https://search-ragline.us-east-1.es.amazonaws.com:443"
    assert connection.session.verify not in (False, None)  # True or the system CA bundle
    assert isinstance(connection.session.auth, RequestsAWSV4SignerAuth)
