"""The OpenSearch adapter's exact requests, against a fake connection that records what the real
client serialises and answers with response bodies shaped like OpenSearch's (the doc page each
shape comes from is named where it matters)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.credentials import Credentials
from opensearchpy import Connection, OpenSearch, RequestsAWSV4SignerAuth, RequestsHttpConnection
from opensearchpy.exceptions import TransportError

from ragline.contracts import Chunk, FilterableFieldType
from ragline.search.fields import FilterableFields, MatchAny, Range
from ragline.search.opensearch import (
    ANALYSIS,
    ANALYZER,
    BulkWriteError,
    HnswParams,
    OpenSearchIndex,
    SearchIndexError,
    opensearch_client,
)
from ragline.search.port import IndexedChunk, SearchFilter

ALIAS = "ragline-chunks"
WRITE = f"{ALIAS}-write"
V1, V2 = f"{ALIAS}-v1", f"{ALIAS}-v2"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW_MS = 1714564800000
FIELDS = FilterableFields({"year": "number", "published": "date", "team": "keyword", "draft": "boolean"})
TASK = "oTUltX4IQMOUUVeiohTt8A:12345"


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

    def calls(self) -> list[tuple[str, str]]:
        return [(s.method, s.url) for s in self.sent]


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
        metadata={"year": 2024, "published": "2024-03-01", "team": 7, "public": False},
    )
    return Chunk(**(fields | overrides))


def index(cluster: FakeCluster, **kwargs: Any) -> OpenSearchIndex:
    kwargs = {"fields": FIELDS, "sleep": cluster_sleeps(cluster), "now": lambda: NOW} | kwargs
    return OpenSearchIndex(cluster.client(), ALIAS, dimension=4, **kwargs)


def cluster_sleeps(cluster: FakeCluster):
    cluster.slept = []  # type: ignore[attr-defined]
    return cluster.slept.append  # type: ignore[attr-defined]


def hit(c: Chunk, score: float) -> dict[str, Any]:
    return {
        "_index": V1,
        "_id": c.chunk_id,
        "_score": score,
        "_source": c.model_dump(mode="json") | {"chunk_id": c.chunk_id},
    }


def search_response(*hits: dict[str, Any], failed: int = 0, timed_out: bool = False) -> dict[str, Any]:
    shards: dict[str, Any] = {"total": 2, "successful": 2 - failed, "skipped": 0, "failed": failed}
    if failed:
        shards["failures"] = [
            {
                "shard": 1,
                "index": V1,
                "node": "n1",
                "reason": {"type": "node_not_connected_exception", "reason": "gone"},
            }
        ]
    return {
        "took": 3,
        "timed_out": timed_out,
        "_shards": shards,
        "hits": {"max_score": hits[0]["_score"] if hits else None, "hits": list(hits)},
    }


def aliases(**by_index: dict[str, Any]) -> dict[str, Any]:
    """GET /<alias>-v*/_alias: every matching index, with its aliases (possibly none)."""
    return {name: {"aliases": value} for name, value in by_index.items()}


LIVE = {"ragline-chunks-v1": {ALIAS: {}, WRITE: {"is_write_index": True}}}
ACK = {"acknowledged": True}

STAFF_ACME = SearchFilter(groups_any=frozenset({"staff", "admins"}), tenant="acme")
# Active chunks only; a chunk written before the field existed has none and counts as active.
ACTIVE = {"bool": {"must_not": [{"term": {"active": False}}]}}
EXPECTED_ACL = [{"terms": {"allowed_groups": ["admins", "staff"]}}, {"term": {"tenant": "acme"}}, ACTIVE]

# The mapping the adapter wrote before filterable fields, indexed_at and the write alias existed.
OLD_PROPERTIES = {
    "chunk_id": {"type": "keyword"},
    "document_id": {"type": "keyword"},
    "version": {"type": "integer"},
    "ordinal": {"type": "integer"},
    "collection": {"type": "keyword"},
    "title": {"type": "text", "analyzer": "english"},
    "text": {"type": "text", "analyzer": "english"},
    "heading_path": {"type": "keyword", "index": False},
    "page": {"type": "integer", "index": False},
    "char_start": {"type": "integer", "index": False},
    "char_end": {"type": "integer", "index": False},
    "token_count": {"type": "integer", "index": False},
    "allowed_groups": {"type": "keyword"},
    "tenant": {"type": "keyword"},
    "metadata": {"type": "flat_object"},
    "vector": {
        "type": "knn_vector",
        "dimension": 4,
        "method": {
            "engine": "faiss",
            "space_type": "innerproduct",
            "name": "hnsw",
            "parameters": {"ef_construction": 128, "m": 16},
        },
    },
}

DATE = {"type": "date", "format": "strict_date_optional_time||epoch_millis", "ignore_malformed": True}


# ------------------------------------------------------------------------------------- ensure_index


def test_ensure_index_creates_v1_with_the_read_and_write_aliases():
    cluster = FakeCluster().answer(200, {}).answer(200, {"acknowledged": True, "index": V1})
    index(cluster).ensure_index()

    assert cluster.calls() == [("GET", f"/{ALIAS}-v*/_alias"), ("PUT", f"/{V1}")]
    body = cluster.sent[1].body
    # https://docs.opensearch.org/latest/api-reference/alias/aliases-api/ (is_write_index)
    assert body["aliases"] == {ALIAS: {}, WRITE: {"is_write_index": True}}
    assert body["settings"] == {"index": {"knn": True, "knn.algo_param.ef_search": 100}, "analysis": ANALYSIS}
    # https://docs.opensearch.org/latest/analyzers/custom-analyzer/ and the token filters it names
    assert ANALYSIS["analyzer"][ANALYZER] == {
        "type": "custom",
        "tokenizer": "standard",
        "filter": ["ragline_possessive", "lowercase", "asciifolding", "ragline_stop", "ragline_snowball"],
    }
    assert ANALYSIS["filter"]["ragline_snowball"] == {"type": "snowball", "language": "English"}
    assert body["mappings"]["dynamic"] == "strict"
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
    english = {"type": "text", "analyzer": ANALYZER}
    assert props["text"] == props["title"] == props["heading_path"] == english
    assert props["metadata"] == {"type": "flat_object"}
    assert props["filterable"] == {
        "type": "object",
        "properties": {
            "year": {"type": "double"},
            "published": DATE,
            "team": {"type": "keyword"},
            "draft": {"type": "boolean"},
        },
    }
    assert props["indexed_at"] == {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
    assert props["copied_from"] == {"type": "keyword"}
    assert props["active"] == {"type": "boolean"}
    for name in ("allowed_groups", "tenant", "collection", "document_id", "chunk_id"):
        assert props[name] == {"type": "keyword"}
    assert props["version"]["type"] == props["ordinal"]["type"] == "integer"
    # Everything a Chunk has is mapped, so hits rebuild it and strict mapping accepts what upsert writes.
    assert set(Chunk.model_fields) <= set(props)


def test_index_body_takes_the_hnsw_parameters():
    hnsw = HnswParams(engine="lucene", space_type="cosinesimil", m=32, ef_construction=256, ef_search=64)
    body = index(FakeCluster(), hnsw=hnsw).index_body()
    assert body["settings"]["index"] == {"knn": True}  # lucene takes ef_search from k
    assert body["mappings"]["properties"]["vector"]["method"] == {
        "name": "hnsw",
        "engine": "lucene",
        "space_type": "cosinesimil",
        "parameters": {"m": 32, "ef_construction": 256},
    }


def test_ensure_index_tolerates_a_concurrent_create():
    error = {
        "error": {"type": "resource_already_exists_exception", "reason": f"index [{V1}] already exists"},
        "status": 400,
    }
    cluster = FakeCluster().answer(200, {}).answer(400, error)
    index(cluster).ensure_index()
    assert len(cluster.sent) == 2


def test_ensure_index_on_a_current_index_only_reads():
    mappings = index(FakeCluster()).index_body()["mappings"]
    del mappings["properties"]["filterable"]["type"]  # GET _mapping leaves out "type": "object"
    cluster = FakeCluster().answer(200, aliases(**LIVE)).answer(200, {V1: {"mappings": mappings}})
    index(cluster).ensure_index()
    assert cluster.calls() == [("GET", f"/{ALIAS}-v*/_alias"), ("GET", f"/{V1}/_mapping")]


def test_ensure_index_adds_the_mapping_of_a_newly_declared_field():
    mappings = index(FakeCluster(), fields=FilterableFields({"year": "number"})).index_body()["mappings"]
    cluster = (
        FakeCluster().answer(200, aliases(**LIVE)).answer(200, {V1: {"mappings": mappings}}).answer(200, ACK)
    )
    index(cluster).ensure_index()

    put = cluster.sent[2]
    assert (put.method, put.url) == ("PUT", f"/{V1}/_mapping")
    assert put.body == {
        "properties": {
            "filterable": {
                "properties": {"published": DATE, "team": {"type": "keyword"}, "draft": {"type": "boolean"}}
            }
        }
    }


def test_ensure_index_upgrades_a_deployment_with_only_the_read_alias(caplog):
    cluster = (
        FakeCluster()
        .answer(200, aliases(**{V1: {ALIAS: {}}}))
        .answer(200, ACK)
        .answer(200, {V1: {"mappings": {"dynamic": "strict", "properties": OLD_PROPERTIES}}})
        .answer(200, ACK)
    )
    with caplog.at_level(logging.WARNING):
        index(cluster, fields=FilterableFields({"year": "number"})).ensure_index()

    assert cluster.calls() == [
        ("GET", f"/{ALIAS}-v*/_alias"),
        ("POST", "/_aliases"),
        ("GET", f"/{V1}/_mapping"),
        ("PUT", f"/{V1}/_mapping"),
    ]
    assert cluster.sent[1].body == {
        "actions": [{"add": {"index": V1, "alias": WRITE, "is_write_index": True}}]
    }
    assert cluster.sent[3].body == {
        "properties": {
            "filterable": {"type": "object", "properties": {"year": {"type": "double"}}},
            "indexed_at": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
            "active": {"type": "boolean"},
            "copied_from": {"type": "keyword"},
        }
    }
    # heading_path cannot turn from keyword into text in place: reported, fixed by reindex.
    [record] = [r for r in caplog.records if "ragline reindex" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "heading_path (keyword, wanted text)" in record.getMessage()


# ------------------------------------------------------------------------------------- writes


def bulk_item(c: Chunk, status: int, error: dict[str, str] | None = None) -> dict[str, Any]:
    """One item of a _bulk response: https://docs.opensearch.org/latest/api-reference/document-apis/bulk/"""
    item: dict[str, Any] = {"_index": V1, "_id": c.chunk_id, "status": status}
    if error:
        item["error"] = error
    else:
        item |= {
            "_version": 1,
            "result": "created" if status == 201 else "updated",
            "_shards": {"total": 2, "successful": 2, "failed": 0},
            "_seq_no": 7,
            "_primary_term": 1,
        }
    return {"index": item}


def bulk_response(*items: dict[str, Any]) -> dict[str, Any]:
    errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
    return {"took": 30, "errors": errors, "items": list(items)}


REJECTED = {
    "type": "es_rejected_execution_exception",
    "reason": "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
    "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1024, max_coordinating_and_primary_bytes=0]",
}
UNPARSABLE = {
    "type": "mapper_parsing_exception",
    "reason": "failed to parse field [vector] of type [knn_vector]",
}


def test_upsert_writes_typed_filterable_values_through_the_write_alias():
    c0, c1 = chunk(0), chunk(1, metadata={"year": "2024", "draft": True})
    cluster = FakeCluster().answer(200, bulk_response(bulk_item(c0, 201), bulk_item(c1, 200)))
    index(cluster).upsert([IndexedChunk(c0, [3.0, 4.0, 0.0, 0.0]), IndexedChunk(c1, [0, 0, 0, 2])])

    [sent] = cluster.sent
    assert (sent.method, sent.url) == ("POST", "/_bulk")
    assert sent.params == {"refresh": "wait_for", "require_alias": "true"}
    action, source, action2, source2 = sent.body
    assert action == {"index": {"_index": WRITE, "_id": "doc1:v2:0"}}
    assert action2 == {"index": {"_index": WRITE, "_id": "doc1:v2:1"}}
    assert source == c0.model_dump(mode="json") | {
        "chunk_id": "doc1:v2:0",
        # team is declared keyword but is 7 here: left out, the document still indexes.
        "filterable": {"year": 2024.0, "published": 1709251200000},
        "indexed_at": NOW_MS,
        "active": True,
        "vector": [0.6, 0.8, 0.0, 0.0],
    }
    assert source2["filterable"] == {"draft": True}  # "2024" is not a number
    assert source2["vector"] == [0.0, 0.0, 0.0, 1.0]


def test_upsert_writes_a_version_inactive_when_asked():
    c = chunk()
    cluster = FakeCluster().answer(200, bulk_response(bulk_item(c, 201)))
    index(cluster).upsert([IndexedChunk(c, [1, 0, 0, 0], active=False)])
    assert cluster.sent[0].body[1]["active"] is False  # no search finds it until set_active


def test_upsert_retries_only_the_items_rejected_for_load():
    items = [IndexedChunk(chunk(i), [1, 0, 0, 0]) for i in range(3)]
    c0, c1, c2 = (item.chunk for item in items)
    cluster = (
        FakeCluster()
        .answer(
            200,
            bulk_response(bulk_item(c0, 201), bulk_item(c1, 429, REJECTED), bulk_item(c2, 400, UNPARSABLE)),
        )
        .answer(200, bulk_response(bulk_item(c1, 201)))
    )

    with pytest.raises(BulkWriteError) as raised:
        index(cluster).upsert(items)

    # The 400 fails at once; the 429 is resent alone and then written.
    assert raised.value.failed == {
        "doc1:v2:2": "400 mapper_parsing_exception: failed to parse field [vector] of type [knn_vector]"
    }
    first, retry = cluster.sent
    assert [line["index"]["_id"] for line in first.body[::2]] == ["doc1:v2:0", "doc1:v2:1", "doc1:v2:2"]
    assert retry.body == first.body[2:4]
    assert cluster.slept == [0.5]


def test_upsert_gives_up_after_the_retries_with_the_last_reason():
    c = chunk()
    cluster = FakeCluster()
    for _ in range(3):
        cluster.answer(200, bulk_response(bulk_item(c, 429, REJECTED)))

    with pytest.raises(BulkWriteError) as raised:
        index(cluster, bulk_retries=2).upsert([IndexedChunk(c, [1, 0, 0, 0])])

    assert list(raised.value.failed) == ["doc1:v2:0"]
    assert raised.value.failed["doc1:v2:0"].startswith("429 es_rejected_execution_exception")
    assert len(cluster.sent) == 3
    assert cluster.slept == [0.5, 1.0]


def test_upsert_retries_server_errors_and_a_rejected_request():
    c = chunk()
    shard_error = {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}
    cluster = (
        FakeCluster()
        .answer(
            429,
            {
                "error": {"type": "es_rejected_execution_exception", "reason": "bulk queue full"},
                "status": 429,
            },
        )
        .answer(200, bulk_response(bulk_item(c, 503, shard_error)))
        .answer(200, bulk_response(bulk_item(c, 200)))
    )
    index(cluster).upsert([IndexedChunk(c, [1, 0, 0, 0])])
    assert len(cluster.sent) == 3
    assert cluster.slept == [0.5, 1.0]


def test_upsert_splits_large_batches():
    items = [IndexedChunk(chunk(i), [1, 0, 0, 0]) for i in range(5)]
    cluster = FakeCluster()
    for sizes in ([0, 1], [2, 3], [4]):
        cluster.answer(200, bulk_response(*(bulk_item(items[i].chunk, 201) for i in sizes)))

    index(cluster, max_bulk_actions=2).upsert(items)

    assert [len(s.body) // 2 for s in cluster.sent] == [2, 2, 1]


def test_upsert_splits_by_bytes():
    items = [IndexedChunk(chunk(i), [1, 0, 0, 0]) for i in range(3)]
    cluster = FakeCluster()
    for item in items:
        cluster.answer(200, bulk_response(bulk_item(item.chunk, 201)))

    index(cluster, max_bulk_bytes=600).upsert(items)  # each action is about 500 bytes

    assert [len(s.body) // 2 for s in cluster.sent] == [1, 1, 1]


def test_upsert_rejects_a_vector_of_the_wrong_dimension():
    cluster = FakeCluster()
    with pytest.raises(ValueError):
        index(cluster).upsert([IndexedChunk(chunk(), [1, 0, 0])])
    assert cluster.sent == []


def test_upsert_of_nothing_sends_nothing():
    cluster = FakeCluster()
    index(cluster).upsert([])
    assert cluster.sent == []


def delete_by_query_response(deleted: int, failures: list[Any] | None = None) -> dict[str, Any]:
    """https://docs.opensearch.org/latest/api-reference/document-apis/delete-by-query/ (response)"""
    return {
        "took": 9,
        "timed_out": False,
        "total": deleted,
        "deleted": deleted,
        "batches": 1,
        "version_conflicts": 0,
        "noops": 0,
        "retries": {"bulk": 0, "search": 0},
        "throttled_millis": 0,
        "requests_per_second": -1.0,
        "throttled_until_millis": 0,
        "failures": failures or [],
    }


@pytest.mark.parametrize(
    ("version", "terms"),
    [
        (None, [{"term": {"document_id": "doc1"}}]),
        (2, [{"term": {"document_id": "doc1"}}, {"term": {"version": 2}}]),
    ],
)
def test_delete_document_deletes_through_both_aliases(version, terms):
    cluster = FakeCluster().answer(200, delete_by_query_response(3))
    assert index(cluster).delete_document("doc1", version) == 3

    [sent] = cluster.sent
    assert (sent.method, sent.url) == ("POST", f"/{ALIAS},{WRITE}/_delete_by_query")
    assert sent.params == {"refresh": "true", "conflicts": "proceed"}
    assert sent.body == {"query": {"bool": {"filter": terms}}}


def test_delete_document_raises_on_failures():
    failure = {
        "index": V2,
        "id": "doc1:v2:0",
        "cause": {"type": "es_rejected_execution_exception", "reason": "rejected"},
        "status": 429,
    }
    cluster = FakeCluster().answer(200, delete_by_query_response(1, [failure]))
    with pytest.raises(SearchIndexError, match="es_rejected_execution_exception"):
        index(cluster).delete_document("doc1")


def update_by_query_response(updated: int, noops: int = 0, conflicts: int = 0) -> dict[str, Any]:
    """https://docs.opensearch.org/latest/api-reference/document-apis/update-by-query/ (response)"""
    return {
        "took": 11,
        "timed_out": False,
        "total": updated + noops + conflicts,
        "updated": updated,
        "deleted": 0,
        "batches": 1,
        "version_conflicts": conflicts,
        "noops": noops,
        "retries": {"bulk": 0, "search": 0},
        "throttled_millis": 0,
        "requests_per_second": -1.0,
        "throttled_until_millis": 0,
        "failures": [],
    }


VERSION_TERMS = [{"term": {"document_id": "doc1"}}, {"term": {"version": 2}}]
CONFLICT = {
    "type": "version_conflict_engine_exception",
    "reason": "[doc1:v2:1]: version conflict, required seqNo [7], primary term [1]. "
    "current document has seqNo [8] and primary term [1]",
    "index": V1,
    "shard": "0",
    "index_uuid": "aT1y6VqPQnqjQ3l1rXbJ6g",
}


def conflicted(updated: int) -> dict[str, Any]:
    """A conflicts=abort update-by-query that met a version conflict: OpenSearch answers with the
    highest status among the failures (409) and the counts so far (BulkIndexByScrollResponseContentListener)."""
    failure = {"index": V1, "id": "doc1:v2:1", "cause": CONFLICT, "status": 409}
    return update_by_query_response(updated, conflicts=1) | {"failures": [failure]}


@pytest.mark.parametrize("active", [True, False])
def test_set_active_updates_the_version_through_both_aliases_and_refreshes(active):
    cluster = FakeCluster().answer(200, update_by_query_response(2, noops=1))
    assert index(cluster).set_active("doc1", 2, active) == 3  # updated + already as asked

    [sent] = cluster.sent
    assert (sent.method, sent.url) == ("POST", f"/{ALIAS},{WRITE}/_update_by_query")
    # conflicts=abort (the default, said out loud): proceeding would leave the chunks a concurrent
    # write touched with the old flag, half a version visible.
    assert sent.params == {"refresh": "true", "conflicts": "abort"}
    assert sent.body["query"] == {"bool": {"filter": VERSION_TERMS}}
    script = sent.body["script"]
    assert script["lang"] == "painless"
    assert script["params"] == {"active": active}
    # a chunk already as asked is a noop; any write drops the reindex copy's mark
    assert "ctx.op = 'noop'" in script["source"]
    assert "ctx._source.remove('copied_from')" in script["source"]


def test_set_active_sends_the_update_again_after_a_version_conflict():
    cluster = (
        FakeCluster()
        .answer(409, conflicted(updated=1))
        .answer(409, conflicted(updated=0))
        .answer(200, update_by_query_response(1, noops=2))
    )
    assert index(cluster).set_active("doc1", 2, True) == 3
    assert len(cluster.sent) == 3
    assert cluster.sent[0].body == cluster.sent[2].body  # the whole version again: idempotent
    assert cluster.slept == [0.5, 1.0]


def test_set_active_gives_up_after_the_conflict_retries():
    cluster = FakeCluster()
    for _ in range(3):
        cluster.answer(409, conflicted(updated=0))
    with pytest.raises(SearchIndexError, match="version_conflict_engine_exception"):
        index(cluster, conflict_retries=2).set_active("doc1", 2, True)
    assert len(cluster.sent) == 3
    assert cluster.slept == [0.5, 1.0]


def test_set_active_does_not_retry_other_failures():
    rejected = {"index": V1, "id": "doc1:v2:0", "cause": REJECTED, "status": 429}
    cluster = FakeCluster().answer(429, update_by_query_response(0) | {"failures": [rejected]})
    with pytest.raises(TransportError) as raised:
        index(cluster).set_active("doc1", 2, True)
    assert raised.value.status_code == 429  # the caller (the saga's step) retries with its own backoff
    assert len(cluster.sent) == 1


def test_set_active_of_a_version_without_chunks_counts_none():
    cluster = FakeCluster().answer(200, update_by_query_response(0))
    assert index(cluster).set_active("doc1", 9, True) == 0


@pytest.mark.parametrize(
    ("version", "active", "filters"),
    [
        (2, True, [*VERSION_TERMS, ACTIVE]),
        (2, False, [*VERSION_TERMS, {"term": {"active": False}}]),
        (None, None, [{"term": {"document_id": "doc1"}}]),
    ],
)
def test_count_asks_the_read_alias(version, active, filters):
    shards = {"total": 2, "successful": 2, "skipped": 0, "failed": 0}
    cluster = FakeCluster().answer(200, {"count": 4, "_shards": shards})
    assert index(cluster).count("doc1", version, active=active) == 4

    [sent] = cluster.sent
    # what searches see: during a reindex, the old index until the read alias moves
    assert (sent.method, sent.url) == ("POST", f"/{ALIAS}/_count")
    assert sent.body == {"query": {"bool": {"filter": filters}}}


def test_count_raises_on_shard_failures():
    shards = {"total": 2, "successful": 1, "skipped": 0, "failed": 1, "failures": []}
    cluster = FakeCluster().answer(200, {"count": 2, "_shards": shards})
    with pytest.raises(SearchIndexError, match="count failed on 1 of 2 shards"):
        index(cluster).count("doc1", 2, active=True)


def composite_response(*buckets: tuple[str, int, int, int], failed: int = 0) -> dict[str, Any]:
    """(document, version, chunks, inactive chunks) as OpenSearch answers a composite aggregation."""
    response = search_response(failed=failed)
    rows = [
        {"key": {"document_id": d, "version": v}, "doc_count": n, "inactive": {"doc_count": i}}
        for d, v, n, i in buckets
    ]
    after = {"after_key": rows[-1]["key"]} if rows else {}
    response["aggregations"] = {"versions": {"buckets": rows, **after}}
    return response


def test_inventory_pages_a_composite_aggregation_through_the_read_alias():
    cluster = FakeCluster().answer(200, composite_response(("doc1", 1, 3, 3), ("doc1", 2, 4, 0)))
    cluster.answer(200, composite_response(("doc2", 1, 2, 1)))
    first = index(cluster).inventory(size=2)
    assert [(c.document_id, c.version, c.active, c.inactive) for c in first] == [
        ("doc1", 1, 0, 3),
        ("doc1", 2, 4, 0),
    ]
    second = index(cluster).inventory(after=first[-1].key, size=2)
    assert [(c.key, c.active, c.inactive) for c in second] == [(("doc2", 1), 1, 1)]

    expected_aggs = {
        "versions": {
            "composite": {
                "size": 2,
                "sources": [
                    {"document_id": {"terms": {"field": "document_id"}}},
                    {"version": {"terms": {"field": "version"}}},
                ],
            },
            # chunks without the field count as active, as searches treat them
            "aggs": {"inactive": {"filter": {"term": {"active": False}}}},
        }
    }
    assert [(s.method, s.url) for s in cluster.sent] == [("POST", f"/{ALIAS}/_search")] * 2
    assert cluster.sent[0].body == {"size": 0, "track_total_hits": False, "aggs": expected_aggs}
    expected_aggs["versions"]["composite"]["after"] = {"document_id": "doc1", "version": 2}
    assert cluster.sent[1].body["aggs"] == expected_aggs


def test_inventory_raises_rather_than_return_part_of_the_index():
    cluster = FakeCluster().answer(200, composite_response(("doc1", 1, 3, 0), failed=1))
    with pytest.raises(SearchIndexError, match="inventory failed on 1 of 2 shards"):
        index(cluster).inventory()


# ------------------------------------------------------------------------------------- reads


def test_keyword_search_is_best_fields_with_the_filters_inside_the_bool_query():
    found = chunk(3)
    cluster = FakeCluster().answer(200, search_response(hit(found, 7.25)))
    flt = SearchFilter(
        groups_any=frozenset({"staff", "admins"}),
        tenant="acme",
        collection="handbook",
        conditions=(
            MatchAny("draft", FilterableFieldType.BOOLEAN, (False,)),
            MatchAny("published", FilterableFieldType.DATE, (datetime(2024, 3, 1, tzinfo=UTC),)),
            MatchAny("team", FilterableFieldType.KEYWORD, ("hr", "legal")),
            Range("year", FilterableFieldType.NUMBER, gt=2019.0, lte=2024.0),
        ),
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
                "must": [
                    {
                        "multi_match": {
                            "query": "annual leave",
                            "type": "best_fields",
                            "fields": ["text", "title^2", "heading_path"],
                            "lenient": True,
                        }
                    }
                ],
                "filter": EXPECTED_ACL
                + [
                    {"term": {"collection": "handbook"}},
                    {"terms": {"filterable.draft": [False]}},
                    {"terms": {"filterable.published": [1709251200000]}},
                    {"terms": {"filterable.team": ["hr", "legal"]}},
                    {"range": {"filterable.year": {"gt": 2019.0, "lte": 2024.0}}},
                ],
            }
        },
    }
    assert [(r.chunk, r.score) for r in results] == [(found, 7.25)]


@pytest.mark.parametrize(
    ("title_boost", "heading_boost", "fields"),
    [
        (3.5, 0.0, ["text", "title^3.5"]),  # a boost of 0 leaves the field out
        (0.0, 1.5, ["text", "heading_path^1.5"]),
    ],
)
def test_keyword_search_boosts(title_boost, heading_boost, fields):
    cluster = FakeCluster().answer(200, search_response())
    idx = index(cluster, title_boost=title_boost, heading_boost=heading_boost)
    idx.keyword_search("q", STAFF_ACME, 5)
    assert cluster.sent[0].body["query"]["bool"]["must"][0]["multi_match"]["fields"] == fields


def test_vector_search_puts_the_filter_inside_the_knn_clause():
    found = chunk(1)
    cluster = FakeCluster().answer(200, search_response(hit(found, 1.8)))
    flt = SearchFilter(
        groups_any=frozenset({"staff", "admins"}),
        tenant="acme",
        conditions=(
            Range(
                "published",
                FilterableFieldType.DATE,
                gte=datetime(2024, 3, 1, tzinfo=UTC),
                lt=datetime(2025, 1, 1, tzinfo=UTC),
            ),
            Range("year", FilterableFieldType.NUMBER),
        ),
    )

    results = index(cluster).vector_search([0.0, 2.0, 0.0, 0.0], flt, 8)

    [sent] = cluster.sent
    # https://docs.opensearch.org/latest/vector-search/filter-search-knn/efficient-knn-filtering/
    assert sent.body == {
        "size": 8,
        "track_total_hits": False,
        "_source": {"excludes": ["vector"]},
        "query": {
            "knn": {
                "vector": {
                    "vector": [0.0, 1.0, 0.0, 0.0],
                    "k": 8,
                    "filter": {
                        "bool": {
                            "filter": EXPECTED_ACL
                            + [
                                {
                                    "range": {
                                        "filterable.published": {"gte": 1709251200000, "lt": 1735689600000}
                                    }
                                },
                                {"exists": {"field": "filterable.year"}},
                            ]
                        }
                    },
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
        ACTIVE,
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


def test_a_timed_out_search_is_logged_and_returned(caplog):
    cluster = FakeCluster().answer(200, search_response(hit(chunk(), 2.0), timed_out=True))
    with caplog.at_level(logging.WARNING):
        assert len(index(cluster).keyword_search("leave", STAFF_ACME, 5)) == 1
    assert "timed out" in caplog.text


# ------------------------------------------------------------------------------------- reindex


def task_status(created: int, total: int = 4, conflicts: int = 0) -> dict[str, Any]:
    return {
        "total": total,
        "updated": 0,
        "created": created,
        "deleted": 0,
        "batches": 1,
        "version_conflicts": conflicts,
        "noops": 0,
        "retries": {"bulk": 0, "search": 0},
        "throttled_millis": 0,
        "requests_per_second": -1.0,
        "throttled_until_millis": 0,
    }


def task(completed: bool, status: dict[str, Any], **rest: Any) -> dict[str, Any]:
    """GET _tasks/<id> (opensearch-api-specification tasks.get@200: completed, task, response|error)."""
    return {
        "completed": completed,
        "task": {
            "node": "oTUltX4IQMOUUVeiohTt8A",
            "id": 12345,
            "type": "transport",
            "action": "indices:data/write/reindex",
            "status": status,
            "description": f"reindex from [{V1}] to [{V2}]",
            "start_time_in_millis": 1714564800000,
            "running_time_in_nanos": 2345678,
            "cancellable": True,
            "cancelled": False,
            "headers": {},
        },
        **rest,
    }


def reindex_result(created: int, conflicts: int, failures: list[Any] | None = None) -> dict[str, Any]:
    """The _reindex response: https://docs.opensearch.org/latest/api-reference/document-apis/reindex/"""
    return {
        "took": 1234,
        "timed_out": False,
        "total": created + conflicts,
        "updated": 0,
        "created": created,
        "deleted": 0,
        "batches": 1,
        "version_conflicts": conflicts,
        "noops": 0,
        "retries": {"bulk": 0, "search": 0},
        "throttled_millis": 0,
        "requests_per_second": -1.0,
        "throttled_until_millis": 0,
        "failures": failures or [],
    }


def sweep_hits(**sources: dict[str, Any]) -> dict[str, Any]:
    """Copies with `_source: ["active"]`: {} for a chunk written before the field existed."""
    hits = [
        {"_index": V2, "_id": i, "_score": None, "_source": src, "sort": [i]} for i, src in sources.items()
    ]
    return search_response(*hits) | {"hits": {"max_score": None, "hits": hits}}


def mget(**found: dict[str, Any] | None) -> dict[str, Any]:
    """_mget with `_source=active`: each chunk's filtered source, or None where it is not found."""
    docs = []
    for doc_id, source in found.items():
        doc: dict[str, Any] = {"_index": V1, "_id": doc_id, "found": source is not None}
        if source is not None:
            doc |= {"_version": 1, "_seq_no": 3, "_primary_term": 1, "found": True, "_source": source}
        docs.append(doc)
    return {"docs": docs}


def full_reindex(cluster: FakeCluster) -> FakeCluster:
    return (
        cluster.answer(200, aliases(**LIVE))
        .answer(200, {"acknowledged": True, "shards_acknowledged": True, "index": V2})
        .answer(200, ACK)
        .answer(200, {"task": TASK})
        .answer(200, task(False, task_status(created=2)))
        .answer(200, task(True, task_status(created=3, conflicts=1), response=reindex_result(3, 1)))
        # sweep, page size 2. Page 1: b was deleted during the copy; a was activated after the copy's
        # snapshot, before the copy reached it. Page 2: c (from before the active field, so active)
        # was deactivated the same way.
        .answer(200, sweep_hits(a={"active": False}, b={"active": True}))
        .answer(200, mget(a={"active": True}, b=None))
        .answer(200, delete_by_query_response(1))
        .answer(200, update_by_query_response(1))
        .answer(200, sweep_hits(c={}))
        .answer(200, mget(c={"active": False}))
        .answer(200, update_by_query_response(1))
        .answer(200, ACK)
    )


def test_reindex_copies_into_the_next_version_and_swaps_the_aliases():
    cluster = full_reindex(FakeCluster())
    lines: list[str] = []

    summary = index(cluster, sweep_page=2).reindex(progress=lines.append)

    assert cluster.calls() == [
        ("GET", f"/{ALIAS}-v*/_alias"),
        ("PUT", f"/{V2}"),
        ("POST", "/_aliases"),
        ("POST", "/_reindex"),
        ("GET", "/_tasks/oTUltX4IQMOUUVeiohTt8A%3A12345"),
        ("GET", "/_tasks/oTUltX4IQMOUUVeiohTt8A%3A12345"),
        ("POST", f"/{V2}/_search"),
        ("POST", f"/{V1}/_mget"),
        ("POST", f"/{V2}/_delete_by_query"),
        ("POST", f"/{V2}/_update_by_query"),
        ("POST", f"/{V2}/_search"),
        ("POST", f"/{V1}/_mget"),
        ("POST", f"/{V2}/_update_by_query"),
        ("POST", "/_aliases"),
    ]
    create, write_swap, copy, *_ = cluster.sent[1:]
    assert create.body == index(FakeCluster()).index_body()  # no aliases: reads stay on v1 for now
    # One _aliases call each: the alias is never missing or on both.
    assert write_swap.body == {
        "actions": [
            {"remove": {"index": V1, "alias": WRITE}},
            {"add": {"index": V2, "alias": WRITE, "is_write_index": True}},
        ]
    }
    assert copy.params == {"wait_for_completion": "false", "refresh": "true"}
    assert copy.body["conflicts"] == "proceed"
    assert copy.body["source"] == {"index": V1}
    assert copy.body["dest"] == {"index": V2, "op_type": "create"}
    assert copy.body["script"]["lang"] == "painless"
    assert copy.body["script"]["params"] == {
        "fields": {"year": "number", "published": "date", "team": "keyword", "draft": "boolean"},
        "source": V1,
    }
    assert cluster.slept == [5.0]  # one poll while running

    marked = {"term": {"copied_from": V1}}
    sweep, check, delete, activate, sweep2, _, deactivate = (cluster.sent[i] for i in range(6, 13))
    assert sweep.body == {
        "size": 2,
        "_source": ["active"],
        "track_total_hits": False,
        "query": {"bool": {"filter": [marked]}},
        "sort": [{"chunk_id": "asc"}],
    }
    assert sweep2.body["search_after"] == ["b"]
    assert (check.params, check.body) == ({"_source": "active"}, {"ids": ["a", "b"]})
    # Only a chunk that is still the copy's is deleted or corrected: one rewritten or set active
    # since has lost copied_from, and holds a newer value than the one read from v1.
    assert delete.params == {"refresh": "true", "conflicts": "proceed"}
    assert delete.body == {"query": {"bool": {"filter": [{"ids": {"values": ["b"]}}, marked]}}}
    # A chunk that changes between the check and the correction is skipped (it is newer): proceed.
    assert activate.params == deactivate.params == {"refresh": "true", "conflicts": "proceed"}
    assert activate.body["query"] == {"bool": {"filter": [{"ids": {"values": ["a"]}}, marked]}}
    assert activate.body["script"]["params"] == {"active": True}
    assert deactivate.body["query"] == {"bool": {"filter": [{"ids": {"values": ["c"]}}, marked]}}
    assert deactivate.body["script"]["params"] == {"active": False}
    assert cluster.sent[-1].body == {
        "actions": [
            {"remove": {"index": V1, "alias": ALIAS}},
            {"add": {"index": V2, "alias": ALIAS}},
        ]
    }

    assert summary == {
        "index": V2,
        "previous_index": V1,
        "total": 4,
        "created": 3,
        "version_conflicts": 1,
        "swept": 1,
        "active_corrected": 2,
    }
    assert lines == [
        f"created {V2}",
        f"writes now go to {V2}",
        f"copying {V1} -> {V2} (task {TASK})",
        "copied 2/4",
        f"copied 3/4 (1 already rewritten in {V2})",
        "swept 1 chunk(s) deleted during the copy and corrected 2 active flag(s) changed during it "
        "(3 checked)",
        f"reads now come from {V2}; {V1} is kept for rollback",
    ]


def test_reindex_upgrades_a_deployment_without_the_write_alias_first():
    cluster = FakeCluster().answer(200, aliases(**{V1: {ALIAS: {}}, f"{ALIAS}-v0-old": {}}))
    cluster.answer(200, ACK)  # add the write alias to v1
    cluster.answer(500, {"error": {"type": "stop", "reason": "stop here"}, "status": 500})
    with pytest.raises(Exception, match="stop"):
        index(cluster).reindex()
    assert cluster.sent[1].body == {
        "actions": [{"add": {"index": V1, "alias": WRITE, "is_write_index": True}}]
    }
    assert cluster.calls()[2] == ("PUT", f"/{V2}")


def test_reindex_resumes_when_writes_already_go_to_the_new_index():
    cluster = (
        FakeCluster()
        .answer(200, aliases(**{V1: {ALIAS: {}}, V2: {WRITE: {"is_write_index": True}}}))
        .answer(200, {"task": TASK})
        .answer(200, task(True, task_status(created=0, conflicts=4), response=reindex_result(0, 4)))
        .answer(200, sweep_hits())
        .answer(200, ACK)
    )
    summary = index(cluster).reindex()

    assert cluster.calls() == [
        ("GET", f"/{ALIAS}-v*/_alias"),
        ("POST", "/_reindex"),
        ("GET", "/_tasks/oTUltX4IQMOUUVeiohTt8A%3A12345"),
        ("POST", f"/{V2}/_search"),
        ("POST", "/_aliases"),
    ]
    assert summary["version_conflicts"] == 4


def test_reindex_reports_task_failures_and_leaves_reads_on_the_old_index():
    failure = {
        "index": V2,
        "id": "doc9:v1:0",
        "cause": {"type": "mapper_parsing_exception", "reason": "failed to parse field [vector]"},
        "status": 400,
    }
    cluster = (
        FakeCluster()
        .answer(200, aliases(**LIVE))
        .answer(200, {"acknowledged": True, "index": V2})
        .answer(200, ACK)
        .answer(200, {"task": TASK})
        .answer(200, task(True, task_status(created=3), response=reindex_result(3, 0, [failure])))
    )
    with pytest.raises(SearchIndexError, match="1 failure"):
        index(cluster).reindex()
    assert cluster.calls()[-1] == ("GET", "/_tasks/oTUltX4IQMOUUVeiohTt8A%3A12345")  # no read swap


def test_reindex_reports_a_failed_task():
    error = {"type": "task_cancelled_exception", "reason": "cancelled"}
    cluster = (
        FakeCluster()
        .answer(200, aliases(**{V1: {ALIAS: {}}, V2: {WRITE: {}}}))
        .answer(200, {"task": TASK})
        .answer(200, task(True, task_status(created=1), error=error))
    )
    with pytest.raises(SearchIndexError, match="task_cancelled_exception"):
        index(cluster).reindex()


# ------------------------------------------------------------------------------------- wiring


def test_factory_builds_the_index_from_settings():
    from ragline.search.factory import search_index
    from ragline.settings import Settings

    settings = Settings(
        search_backend="opensearch",
        search_index=ALIAS,
        embedding_dimension=4,
        metadata_fields={"year": "number"},
        title_boost=3.0,
        heading_boost=0.0,
        knn_engine="lucene",
        knn_space_type="cosinesimil",
        knn_m=24,
        knn_ef_construction=200,
        knn_ef_search=50,
    )
    cluster = FakeCluster().answer(200, search_response())
    built = search_index(settings, opensearch=cluster.client())

    assert isinstance(built, OpenSearchIndex)
    props = built.index_body()["mappings"]["properties"]
    assert props["filterable"]["properties"] == {"year": {"type": "double"}}
    assert props["vector"]["method"] == {
        "name": "hnsw",
        "engine": "lucene",
        "space_type": "cosinesimil",
        "parameters": {"m": 24, "ef_construction": 200},
    }
    built.keyword_search("q", STAFF_ACME, 3)
    assert cluster.sent[0].body["query"]["bool"]["must"][0]["multi_match"]["fields"] == ["text", "title^3"]


def test_cli_reindex_runs_the_adapter_the_settings_pick(monkeypatch, capsys):
    from ragline import cli
    from ragline.search import factory

    cluster = (
        FakeCluster()
        .answer(200, aliases(**LIVE))
        .answer(200, {"acknowledged": True, "index": V2})
        .answer(200, ACK)
        .answer(200, {"task": TASK})
        .answer(200, task(True, task_status(created=4), response=reindex_result(4, 0)))
        .answer(200, sweep_hits())
        .answer(200, ACK)
    )
    real = factory.search_index
    monkeypatch.setattr(factory, "search_index", lambda settings: real(settings, opensearch=cluster.client()))
    monkeypatch.setenv("RAGLINE_SEARCH_BACKEND", "opensearch")  # as the deployment sets it

    assert cli.main(["reindex"]) == 0

    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "index": V2,
        "previous_index": V1,
        "total": 4,
        "created": 4,
        "version_conflicts": 0,
        "swept": 0,
        "active_corrected": 0,
    }
    assert f"reads now come from {V2}" in err
    assert cluster.responses == []


def test_client_signs_with_sigv4_over_tls():
    client = opensearch_client(
        "https://search-ragline.us-east-1.es.amazonaws.com", "us-east-1", Credentials("AKIDEXAMPLE", "secret")
    )
    [connection] = client.transport.connection_pool.connections
    assert isinstance(connection, RequestsHttpConnection)
    assert connection.host == "https://search-ragline.us-east-1.es.amazonaws.com:443"
    assert connection.session.verify not in (False, None)  # True or the system CA bundle
    assert isinstance(connection.session.auth, RequestsAWSV4SignerAuth)
