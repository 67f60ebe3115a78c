"""The search index port on OpenSearch (Amazon OpenSearch Service in AWS).

Readers and writers go through an alias (`settings.search_index`) that points at a concrete index
(`<alias>-v1`), so a mapping change can be rolled out by building `-v2` and moving the alias.

Every query carries the caller's filter inside the engine's query: `bool.filter` for BM25 and the
k-NN clause's own `filter` for vectors (efficient filtering: the graph search only visits documents
that pass, so k visible hits come back when k exist; a post-filter would return fewer, or none).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from opensearchpy import OpenSearch, RequestsAWSV4SignerAuth, RequestsHttpConnection
from opensearchpy.exceptions import RequestError

from ragline.contracts import Chunk
from ragline.search.port import IndexedChunk, ScoredChunk, SearchFilter

log = logging.getLogger(__name__)

# Every Chunk field except the vector is stored in _source so a hit rebuilds the Chunk.
_SOURCE_EXCLUDES = ["vector"]


class SearchIndexError(RuntimeError):
    """The engine answered, but not with everything that was asked for."""


class BulkWriteError(SearchIndexError):
    def __init__(self, failed: dict[str, str]) -> None:
        super().__init__(f"{len(failed)} chunk(s) were not written: {sorted(failed)}")
        self.failed = failed


@dataclass(frozen=True)
class HnswParams:
    """HNSW defaults for a corpus of up to a few million 384-dimension chunks.

    faiss + innerproduct: efficient k-NN filtering (k-NN 2.9+), `ef_search` as an index setting,
    SIMD. Vectors are L2-normalised by the adapter on write and query, so inner product is exactly
    cosine similarity whatever the embedding model returns. m=16 / ef_construction=128 /
    ef_search=100 is the usual recall/latency balance (OpenSearch's own defaults are 16/100/100).
    """

    engine: Literal["faiss", "lucene"] = "faiss"
    space_type: Literal["innerproduct", "cosinesimil"] = "innerproduct"
    m: int = 16
    ef_construction: int = 128
    ef_search: int = 100


def opensearch_client(endpoint: str, region: str, credentials: Any, *, timeout_s: float = 10.0) -> OpenSearch:
    """A client for an Amazon OpenSearch Service domain, SigV4-signed with the function's role.

    `credentials` is a botocore credentials object (`boto3.Session().get_credentials()`); the signer
    freezes refreshable credentials on every request, so rotation is handled."""
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return OpenSearch(
        hosts=[{"host": parts.hostname, "port": parts.port or 443}],
        # AWSV4SignerAuth is the deprecated alias of this class.
        http_auth=RequestsAWSV4SignerAuth(credentials, region, "es"),
        use_ssl=True,
        verify_certs=True,
        connection_class=RequestsHttpConnection,
        timeout=timeout_s,
    )


class OpenSearchIndex:
    """`SearchIndex` on an OpenSearch alias. The client is built by the caller (see `opensearch_client`)."""

    def __init__(
        self,
        client: OpenSearch,
        alias: str,
        *,
        dimension: int,
        hnsw: HnswParams = HnswParams(),
        refresh: Literal["wait_for", "false"] = "wait_for",
    ) -> None:
        self._client = client
        self._alias = alias
        self._dimension = dimension
        self._hnsw = hnsw
        # "wait_for": once upsert returns, the chunks are searchable, so DocumentIndexed tells the truth.
        self._refresh = refresh

    @property
    def concrete_index(self) -> str:
        return f"{self._alias}-v1"

    # ---------------------------------------------------------------------------------- schema

    def index_body(self) -> dict[str, Any]:
        hnsw = self._hnsw
        index_settings: dict[str, Any] = {"knn": True}
        if hnsw.engine == "faiss":
            # Lucene takes ef_search from k at query time; faiss reads it from the index settings.
            index_settings["knn.algo_param.ef_search"] = hnsw.ef_search
        return {
            "settings": {"index": index_settings},
            "mappings": {
                "dynamic": "strict",
                "properties": {
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
                    # flat_object: one mapped field however many keys users invent (a dynamic keyword
                    # map adds a field per key and eventually hits index.mapping.total_fields.limit);
                    # leaves are indexed as keywords and `term` on `metadata.<key>` works (2.7+).
                    "metadata": {"type": "flat_object"},
                    "vector": {
                        "type": "knn_vector",
                        "dimension": self._dimension,
                        "method": {
                            "name": "hnsw",
                            "engine": hnsw.engine,
                            "space_type": hnsw.space_type,
                            "parameters": {"m": hnsw.m, "ef_construction": hnsw.ef_construction},
                        },
                    },
                },
            },
        }

    def ensure_index(self) -> None:
        indices = self._client.indices
        if indices.exists_alias(name=self._alias) or indices.exists(index=self._alias):
            return
        body = self.index_body() | {"aliases": {self._alias: {}}}
        try:
            indices.create(index=self.concrete_index, body=body)
        except RequestError as exc:  # another writer created it between our check and create
            if exc.error != "resource_already_exists_exception":
                raise

    # ---------------------------------------------------------------------------------- writes

    def upsert(self, items: Sequence[IndexedChunk]) -> None:
        if not items:
            return
        body: list[dict[str, Any]] = []
        for item in items:
            body.append({"index": {"_index": self._alias, "_id": item.chunk.chunk_id}})
            body.append(self._source(item))
        response = self._client.bulk(body=body, refresh=self._refresh)
        if not response.get("errors"):
            return
        # _bulk answers 200 with per-item statuses; botocore-style retries never see these. The whole
        # batch is safe to retry (ids are stable), so the caller's queue redelivery is the retry.
        failed: dict[str, str] = {}
        for entry in response["items"]:
            result = next(iter(entry.values()))
            if result.get("status", 500) >= 300:
                error = result.get("error") or {}
                failed[result["_id"]] = f"{result.get('status')} {error.get('type')}: {error.get('reason')}"
        log.error("bulk write failed for %d of %d chunks: %s", len(failed), len(items), failed)
        raise BulkWriteError(failed)

    def _source(self, item: IndexedChunk) -> dict[str, Any]:
        chunk = item.chunk
        return chunk.model_dump(mode="json") | {"chunk_id": chunk.chunk_id, "vector": self._unit(item.vector)}

    def delete_document(self, document_id: str, version: int | None = None) -> int:
        terms: list[dict[str, Any]] = [{"term": {"document_id": document_id}}]
        if version is not None:
            terms.append({"term": {"version": version}})
        response = self._client.delete_by_query(
            index=self._alias,
            body={"query": {"bool": {"filter": terms}}},
            refresh=True,
            conflicts="proceed",
        )
        if response.get("failures"):
            raise SearchIndexError(f"delete of {document_id} failed: {response['failures']}")
        return int(response.get("deleted", 0))

    # ---------------------------------------------------------------------------------- reads

    def keyword_search(self, query: str, flt: SearchFilter, k: int) -> list[ScoredChunk]:
        if not flt.groups_any:
            return []
        body = {
            "size": k,
            "track_total_hits": False,
            "_source": {"excludes": _SOURCE_EXCLUDES},
            "query": {
                "bool": {
                    "must": [{"multi_match": {"query": query, "fields": ["text", "title^2"]}}],
                    "filter": filter_clauses(flt),
                }
            },
        }
        return [ScoredChunk(chunk=chunk, score=score) for chunk, score in self._search(body)]

    def vector_search(self, vector: Sequence[float], flt: SearchFilter, k: int) -> list[ScoredChunk]:
        if not flt.groups_any:
            return []
        body = {
            "size": k,
            "track_total_hits": False,
            "_source": {"excludes": _SOURCE_EXCLUDES},
            "query": {
                "knn": {
                    "vector": {
                        "vector": self._unit(vector),
                        "k": k,
                        "filter": {"bool": {"filter": filter_clauses(flt)}},
                    }
                }
            },
        }
        return [ScoredChunk(chunk=chunk, score=self._cosine(score)) for chunk, score in self._search(body)]

    def _search(self, body: dict[str, Any]) -> list[tuple[Chunk, float]]:
        response = self._client.search(index=self._alias, body=body)
        shards = response.get("_shards", {})
        if shards.get("failed"):
            # Raised, not just logged: a shard that failed silently drops its chunks, and an answer
            # built on part of the corpus looks exactly like a complete one. The caller retries or
            # reports a 5xx; neither leaks anything.
            log.error(
                "search failed on %s of %s shards: %s",
                shards["failed"],
                shards.get("total"),
                shards.get("failures"),
            )
            raise SearchIndexError(f"search failed on {shards['failed']} of {shards.get('total')} shards")
        if response.get("timed_out"):
            log.warning("search timed out; results may be partial")
        return [(_chunk(hit["_source"]), float(hit["_score"])) for hit in response["hits"]["hits"]]

    # ---------------------------------------------------------------------------------- vectors

    def _unit(self, vector: Sequence[float]) -> list[float]:
        if len(vector) != self._dimension:
            raise ValueError(f"vector has {len(vector)} dimensions, the index has {self._dimension}")
        norm = math.sqrt(sum(x * x for x in vector))
        return [float(x) / norm for x in vector] if norm else [float(x) for x in vector]

    def _cosine(self, score: float) -> float:
        """OpenSearch's k-NN score back to cosine similarity, so both adapters report the same scale."""
        if self._hnsw.space_type == "cosinesimil":  # score = (2 - (1 - cos)) / 2
            return 2 * score - 1
        # innerproduct (faiss): score = 1 + ip when ip >= 0, else 1 / (1 - ip); ip == cos on unit vectors
        return score - 1 if score >= 1 else 1 - 1 / score


def filter_clauses(flt: SearchFilter) -> list[dict[str, Any]]:
    """The caller's visibility and scoping as `bool.filter` clauses. Never called with empty groups."""
    clauses: list[dict[str, Any]] = [{"terms": {"allowed_groups": sorted(flt.groups_any)}}]
    if flt.tenant is None:
        clauses.append({"bool": {"must_not": [{"exists": {"field": "tenant"}}]}})
    else:
        clauses.append({"term": {"tenant": flt.tenant}})
    if flt.collection is not None:
        clauses.append({"term": {"collection": flt.collection}})
    for key, value in sorted(flt.metadata.items()):
        clauses.append({"term": {f"metadata.{key}": value}})
    return clauses


def _chunk(source: dict[str, Any]) -> Chunk:
    return Chunk.model_validate({name: source[name] for name in Chunk.model_fields if name in source})
