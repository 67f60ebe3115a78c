"""The search index port on OpenSearch (Amazon OpenSearch Service in AWS).

Indices and aliases: documents live in concrete indices `<alias>-v<N>`. Readers search the read
alias `<alias>`; writers write through the write alias `<alias>-write`. Both point at the same index
except while `reindex` builds the next version, which is how a mapping change (a newly declared
filterable field, a changed type, new HNSW parameters) is rolled out without downtime.

Every query carries the caller's filter inside the engine's query: `bool.filter` for BM25 and the
k-NN clause's own `filter` for vectors (efficient filtering: the graph search only visits documents
that pass, so k visible hits come back when k exist; a post-filter would return fewer, or none).
The filter also keeps out chunks whose `active` is false (a version the update saga has written but
not yet activated); a chunk without the field, written before it existed, counts as active, so an
existing index needs no rewrite.

Dates (declared `date` fields, `indexed_at`) are written and queried as epoch milliseconds: one exact
representation that the write path, the reindex script and the queries all produce without any
formatting code, and that a `date` field accepts in its default `strict_date_optional_time||epoch_millis`
format.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from opensearchpy import OpenSearch, RequestsAWSV4SignerAuth, RequestsHttpConnection
from opensearchpy.exceptions import ConflictError, RequestError, TransportError

from ragline.contracts import Chunk, FilterableFieldType
from ragline.search.fields import Condition, FilterableFields, MatchAny, TypedValue
from ragline.search.port import IndexedChunk, ScoredChunk, SearchFilter, VersionCount

log = logging.getLogger(__name__)

# Every Chunk field except the vector is stored in _source so a hit rebuilds the Chunk.
_SOURCE_EXCLUDES = ["vector"]

_FIELD_TYPES = {
    FilterableFieldType.KEYWORD: {"type": "keyword"},
    FilterableFieldType.NUMBER: {"type": "double"},
    # ignore_malformed: the reindex script copies date strings as they are and lets the field parse
    # them; one OpenSearch cannot parse leaves the field out of that document instead of failing it.
    FilterableFieldType.DATE: {
        "type": "date",
        "format": "strict_date_optional_time||epoch_millis",
        "ignore_malformed": True,
    },
    FilterableFieldType.BOOLEAN: {"type": "boolean"},
}

# Recomputes `filterable` from each copied document's metadata with the fields declared now (so a
# newly declared field or a changed type reaches existing documents) and marks the copy for the
# sweep. The type tests are FilterableFields.typed's: strings for keyword and date, numbers (JSON has
# no NaN) and booleans.
_COPY_SCRIPT = """
Map typed = new HashMap();
def metadata = ctx._source.metadata;
if (metadata instanceof Map) {
  for (def field : params.fields.entrySet()) {
    def value = metadata.get(field.getKey());
    String kind = field.getValue();
    boolean ok = kind == 'number' ? value instanceof Number
      : kind == 'boolean' ? value instanceof Boolean
      : value instanceof String;
    if (ok) { typed.put(field.getKey(), value); }
  }
}
ctx._source.filterable = typed;
ctx._source.copied_from = params.source;
""".strip()

# set_active's update: a chunk already as asked and not a reindex copy is left alone (a noop, no
# write); any other loses the copy's mark, so the reindex sweep never overwrites this newer value
# with the one it read from the old index (`_sweep`).
_SET_ACTIVE_SCRIPT = """
if (ctx._source.active == params.active && !ctx._source.containsKey('copied_from')) {
  ctx.op = 'noop';
} else {
  ctx._source.active = params.active;
  ctx._source.remove('copied_from');
}
""".strip()

# Active, or written before the field existed: one clause, so old chunks need no migration.
ACTIVE = {"bool": {"must_not": [{"term": {"active": False}}]}}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# OpenSearch's `english` analyzer plus ASCII folding and with Snowball (Porter2) stemming: the
# analysis the embedded engine's full-text index does (ragline/search/lance.py), so the same query
# matches the same words in both. Changing it needs `ragline reindex` (analysis is fixed per index).
ANALYZER = "ragline_english"
ANALYSIS = {
    "filter": {
        "ragline_possessive": {"type": "stemmer", "language": "possessive_english"},
        "ragline_stop": {"type": "stop", "stopwords": "_english_"},
        "ragline_snowball": {"type": "snowball", "language": "English"},
    },
    "analyzer": {
        ANALYZER: {
            "type": "custom",
            "tokenizer": "standard",
            "filter": ["ragline_possessive", "lowercase", "asciifolding", "ragline_stop", "ragline_snowball"],
        }
    },
}


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
    Changing any of them needs a new index: `ragline reindex`.
    """

    engine: Literal["faiss", "lucene"] = "faiss"
    space_type: Literal["innerproduct", "cosinesimil"] = "innerproduct"
    m: int = 16
    ef_construction: int = 128
    ef_search: int = 100


@dataclass(frozen=True)
class _Action:
    """One bulk action, serialised once: its size decides the batch, and a retry resends it as is."""

    chunk_id: str
    lines: str

    @property
    def size(self) -> int:
        return len(self.lines.encode())


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
    """`SearchIndex` on OpenSearch aliases. The client is built by the caller (see `opensearch_client`)."""

    def __init__(
        self,
        client: OpenSearch,
        alias: str,
        *,
        dimension: int,
        fields: FilterableFields = FilterableFields({}),
        hnsw: HnswParams = HnswParams(),
        title_boost: float = 2.0,
        heading_boost: float = 1.0,
        refresh: Literal["wait_for", "false"] = "wait_for",
        bulk_retries: int = 3,
        bulk_backoff_s: float = 0.5,
        conflict_retries: int = 3,
        # AWS caps an HTTP request at 10 MiB on the smallest instance types and advises bulk requests
        # of a few MiB (Well-Architected OpenSearch lens, AOSPERF06-BP02); a chunk with its
        # 384-dimension vector is about 10 KB, so 500 of them fill about 5 MiB.
        max_bulk_actions: int = 500,
        max_bulk_bytes: int = 5 * 1024 * 1024,
        reindex_poll_s: float = 5.0,
        sweep_page: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if bulk_retries < 0 or conflict_retries < 0:
            raise ValueError("bulk_retries and conflict_retries must be >= 0")
        self._client = client
        self._alias = alias
        self._dimension = dimension
        self._fields = fields
        self._hnsw = hnsw
        self._title_boost = title_boost
        self._heading_boost = heading_boost
        # "wait_for": once upsert returns, the chunks are searchable, so DocumentIndexed tells the truth.
        self._refresh = refresh
        self._bulk_retries = bulk_retries
        self._bulk_backoff_s = bulk_backoff_s  # also the first wait before set_active retries a conflict
        self._conflict_retries = conflict_retries
        self._max_bulk_actions = max_bulk_actions
        self._max_bulk_bytes = max_bulk_bytes
        self._reindex_poll_s = reindex_poll_s
        self._sweep_page = sweep_page
        self._sleep = sleep
        self._now = now
        self._version = re.compile(rf"{re.escape(alias)}-v(\d+)")

    @property
    def write_alias(self) -> str:
        return f"{self._alias}-write"

    def _index_name(self, version: int) -> str:
        return f"{self._alias}-v{version}"

    # ---------------------------------------------------------------------------------- schema

    def index_body(self) -> dict[str, Any]:
        hnsw = self._hnsw
        index_settings: dict[str, Any] = {"knn": True}
        if hnsw.engine == "faiss":
            # Lucene takes ef_search from k at query time; faiss reads it from the index settings.
            index_settings["knn.algo_param.ef_search"] = hnsw.ef_search
        return {
            "settings": {"index": index_settings, "analysis": ANALYSIS},
            "mappings": {"dynamic": "strict", "properties": self._properties()},
        }

    def _properties(self) -> dict[str, Any]:
        hnsw = self._hnsw
        english = {"type": "text", "analyzer": ANALYZER}
        stored_only = {"type": "integer", "index": False}
        return {
            "chunk_id": {"type": "keyword"},
            "document_id": {"type": "keyword"},
            "version": {"type": "integer"},
            "ordinal": {"type": "integer"},
            "collection": {"type": "keyword"},
            "title": english,
            "text": english,
            "heading_path": english,
            "page": stored_only,
            "char_start": stored_only,
            "char_end": stored_only,
            "token_count": stored_only,
            "allowed_groups": {"type": "keyword"},
            "tenant": {"type": "keyword"},
            # flat_object: one mapped field however many keys users invent (a dynamic map adds a field
            # per key and eventually hits index.mapping.total_fields.limit). Returned with the chunk;
            # filters use `filterable`, where the declared fields have their real types.
            "metadata": {"type": "flat_object"},
            "filterable": {
                "type": "object",
                "properties": {name: dict(_FIELD_TYPES[kind]) for name, kind in self._fields},
            },
            "indexed_at": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
            # Searches see active chunks only (missing counts as active: chunks from before the field).
            "active": {"type": "boolean"},
            # Set only by reindex's copy; any later write (upsert, set_active) leaves it out.
            "copied_from": {"type": "keyword"},
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
        }

    def ensure_index(self) -> None:
        """Create `<alias>-v1` with both aliases if nothing exists. On an existing deployment: add the
        write alias if it has only the read alias, and add the mappings of fields it lacks (newly
        declared filterable fields; documents written before get their values from `reindex`)."""
        read, write = self._alias_targets(self._versions())
        if not read and not write:
            self._create(self._index_name(1), aliases=True)
            return
        if not write:
            write = [self._add_write_alias(read)]
        self._add_missing_mappings(sorted(set(read) | set(write)), write=set(write))

    def _versions(self) -> dict[str, set[str]]:
        """Every `<alias>-v<N>` index with the aliases on it (GET /<alias>-v*/_alias lists indices
        without aliases too)."""
        response = self._client.indices.get_alias(index=f"{self._alias}-v*")
        return {
            index: set(body.get("aliases", {}))
            for index, body in sorted(response.items())
            if self._version.fullmatch(index)
        }

    def _alias_targets(self, versions: dict[str, set[str]]) -> tuple[list[str], list[str]]:
        """The indices behind the read alias and behind the write alias."""
        read = [index for index, aliases in versions.items() if self._alias in aliases]
        write = [index for index, aliases in versions.items() if self.write_alias in aliases]
        return read, write

    def _number(self, index: str) -> int:
        match = self._version.fullmatch(index)
        return int(match.group(1)) if match else 0

    def _create(self, index: str, *, aliases: bool) -> None:
        body = self.index_body()
        if aliases:
            body["aliases"] = {self._alias: {}, self.write_alias: {"is_write_index": True}}
        try:
            self._client.indices.create(index=index, body=body)
        except RequestError as exc:  # another writer created it between our check and create
            if exc.error != "resource_already_exists_exception" or not aliases:
                raise

    def _add_write_alias(self, read: list[str]) -> str:
        """A deployment from before the write alias: writes go to the index reads come from."""
        if len(read) != 1:
            raise SearchIndexError(f"read alias {self._alias} points at {read}; expected one index")
        # https://docs.opensearch.org/latest/api-reference/alias/aliases-api/ (is_write_index)
        actions = [{"add": {"index": read[0], "alias": self.write_alias, "is_write_index": True}}]
        self._client.indices.update_aliases(body={"actions": actions})
        log.info("added write alias %s to %s", self.write_alias, read[0])
        return read[0]

    def _add_missing_mappings(self, indices: list[str], *, write: set[str]) -> None:
        """PUT _mapping for what each index lacks (adding fields is allowed on a live index). A field
        mapped with another type cannot be changed in place: logged, fixed by `ragline reindex`."""
        wanted = self._properties()
        mappings = self._client.indices.get_mapping(index=indices)
        for index in indices:
            have = mappings[index]["mappings"].get("properties", {})
            missing, conflicts = _mapping_diff(wanted, have)
            if missing:
                self._client.indices.put_mapping(index=index, body={"properties": missing})
                log.info("added mappings to %s: %s", index, sorted(missing))
            if conflicts:
                level = logging.ERROR if index in write else logging.WARNING
                log.log(
                    level,
                    "%s maps %s differently from the settings; run `ragline reindex` to rebuild it",
                    index,
                    ", ".join(conflicts),
                )

    # ---------------------------------------------------------------------------------- writes

    def upsert(self, items: Sequence[IndexedChunk]) -> None:
        """Write through the write alias in batches; items the cluster rejects for load (429, 5xx) are
        resent with exponential backoff, others fail at once. Raises BulkWriteError naming every
        chunk that was finally not written (the queue's redelivery retries the whole batch)."""
        if not items:
            return
        indexed_at = _epoch_millis(self._now())
        actions = [self._action(item, indexed_at) for item in items]  # validates every vector first
        failed: dict[str, str] = {}
        for batch in self._batches(actions):
            failed |= self._bulk(batch)
        if failed:
            log.error("bulk write failed for %d of %d chunks: %s", len(failed), len(items), failed)
            raise BulkWriteError(failed)

    def _action(self, item: IndexedChunk, indexed_at: int) -> _Action:
        chunk = item.chunk
        source = chunk.model_dump(mode="json") | {
            "chunk_id": chunk.chunk_id,
            "filterable": {name: _json(value) for name, value in self._fields.typed(chunk.metadata).items()},
            "indexed_at": indexed_at,
            "active": item.active,
            "vector": self._unit(item.vector),
        }
        action = {"index": {"_index": self.write_alias, "_id": chunk.chunk_id}}
        return _Action(chunk.chunk_id, f"{_dumps(action)}\n{_dumps(source)}")

    def _batches(self, actions: list[_Action]) -> Iterator[list[_Action]]:
        batch: list[_Action] = []
        size = 0
        for action in actions:
            if batch and (len(batch) == self._max_bulk_actions or size + action.size > self._max_bulk_bytes):
                yield batch
                batch, size = [], 0
            batch.append(action)
            size += action.size
        if batch:
            yield batch

    def _bulk(self, actions: list[_Action]) -> dict[str, str]:
        """One batch, resending only the items that failed retryably; returns what was not written."""
        failed: dict[str, str] = {}
        pending = actions
        for attempt in range(self._bulk_retries + 1):
            retry = self._send(pending, failed)
            if not retry:
                break
            if attempt == self._bulk_retries:
                failed |= {action.chunk_id: reason for action, reason in retry}
                break
            delay = self._bulk_backoff_s * 2**attempt
            log.warning("bulk: %d item(s) rejected for load; retrying in %.1fs", len(retry), delay)
            self._sleep(delay)
            pending = [action for action, _ in retry]
        return failed

    def _send(self, actions: list[_Action], failed: dict[str, str]) -> list[tuple[_Action, str]]:
        """Send one _bulk request. Adds non-retryable failures to `failed`; returns the retryable ones."""
        try:
            # require_alias: if the write alias were missing, a write must fail rather than auto-create
            # a concrete index named like it with a dynamic mapping.
            response = self._client.bulk(
                body=[action.lines for action in actions], refresh=self._refresh, require_alias=True
            )
        except TransportError as exc:
            if exc.status_code != 429:  # the transport already retries 502/503/504 and connection errors
                raise
            return [(action, f"429 {exc.error}") for action in actions]
        if not response.get("errors"):
            return []
        # _bulk answers 200 with one item per action, in order, each with its own status:
        # https://docs.opensearch.org/latest/api-reference/document-apis/bulk/ (response body fields)
        retry: list[tuple[_Action, str]] = []
        for action, entry in zip(actions, response["items"], strict=True):
            result = next(iter(entry.values()))
            status = int(result.get("status", 500))
            if status < 300:
                continue
            error = result.get("error") or {}
            reason = f"{status} {error.get('type')}: {error.get('reason')}"
            if status == 429 or status >= 500:  # es_rejected_execution_exception comes as 429
                retry.append((action, reason))
            else:
                failed[action.chunk_id] = reason
        return retry

    def set_active(self, document_id: str, version: int, active: bool) -> int:
        """`_update_by_query` through both aliases (like a delete: while a reindex runs, readers use the
        old index and the new one must agree after the swap; the sweep corrects a copy the old index's
        snapshot made stale), refreshed before it returns.

        Version conflicts abort it (the default, `conflicts=abort`: proceeding would skip the chunks a
        concurrent write touched and leave them with the old flag, a version half visible) and the
        whole update is sent again with backoff; it is idempotent, and chunks already as asked are
        noops. Returns updated + noops: the version's chunk count (during a reindex, in both indices).
        https://docs.opensearch.org/latest/api-reference/document-apis/update-by-query/"""
        body = {
            "query": {"bool": {"filter": _version_terms(document_id, version)}},
            "script": {"lang": "painless", "source": _SET_ACTIVE_SCRIPT, "params": {"active": active}},
        }
        what = f"set_active({document_id} v{version}, {active})"
        attempt = 0
        while True:
            try:
                response = self._client.update_by_query(
                    index=[self._alias, self.write_alias], body=body, refresh=True, conflicts="abort"
                )
                break
            except ConflictError as exc:  # 409: the highest status among the failures is a conflict
                if attempt == self._conflict_retries:
                    raise SearchIndexError(f"{what} kept meeting version conflicts: {exc.info}") from exc
                delay = self._bulk_backoff_s * 2**attempt
                log.warning("%s met a version conflict; sending it again in %.1fs", what, delay)
                self._sleep(delay)
                attempt += 1
        if response.get("failures") or response.get("timed_out"):
            raise SearchIndexError(f"{what} failed: {response.get('failures') or 'timed out'}")
        return int(response.get("updated", 0)) + int(response.get("noops", 0))

    def delete_document(self, document_id: str, version: int | None = None) -> int:
        """Delete through both aliases: while a reindex runs they point at different indices and the
        chunks must leave both (the reindex sweep removes any the copy had already read). The count
        covers both indices, so during a reindex a chunk may count twice."""
        terms = _version_terms(document_id, version)
        return self._delete_by_query([self._alias, self.write_alias], terms, f"delete of {document_id}")

    def count(self, document_id: str, version: int | None = None, *, active: bool | None = None) -> int:
        """`_count` through the read alias: what searches see (during a reindex, chunks written since it
        began are only in the new index and not counted until the read alias moves)."""
        filters = _version_terms(document_id, version)
        if active is not None:
            filters.append(ACTIVE if active else {"term": {"active": False}})
        response = self._client.count(index=self._alias, body={"query": {"bool": {"filter": filters}}})
        _check_shards(response, "count")
        return int(response["count"])

    def inventory(self, after: tuple[str, int] | None = None, size: int = 1000) -> list[VersionCount]:
        """A composite aggregation over (document_id, version) through the read alias, paged with
        `after` (its after_key), with the inactive chunks counted by a filter sub-aggregation (a
        chunk without the field is active, as searches treat it).
        https://docs.opensearch.org/latest/aggregations/bucket/composite/"""
        composite: dict[str, Any] = {
            "size": size,
            "sources": [
                {"document_id": {"terms": {"field": "document_id"}}},
                {"version": {"terms": {"field": "version"}}},
            ],
        }
        if after is not None:
            composite["after"] = {"document_id": after[0], "version": after[1]}
        body = {
            "size": 0,
            "track_total_hits": False,
            "aggs": {
                "versions": {
                    "composite": composite,
                    "aggs": {"inactive": {"filter": {"term": {"active": False}}}},
                }
            },
        }
        response = self._client.search(index=self._alias, body=body)
        _check_shards(response, "inventory")
        counts = []
        for bucket in response["aggregations"]["versions"]["buckets"]:
            inactive = int(bucket["inactive"]["doc_count"])
            key = bucket["key"]
            active = int(bucket["doc_count"]) - inactive
            counts.append(VersionCount(key["document_id"], int(key["version"]), active, inactive))
        return counts

    def _delete_by_query(self, indices: list[str], filters: list[dict[str, Any]], what: str) -> int:
        # conflicts=proceed: a chunk re-written since the query matched it is left alone, not an error.
        # https://docs.opensearch.org/latest/api-reference/document-apis/delete-by-query/
        response = self._client.delete_by_query(
            index=indices, body={"query": {"bool": {"filter": filters}}}, refresh=True, conflicts="proceed"
        )
        if response.get("failures"):
            raise SearchIndexError(f"{what} failed: {response['failures']}")
        if response.get("timed_out"):
            raise SearchIndexError(f"{what} timed out after deleting {response.get('deleted', 0)}")
        return int(response.get("deleted", 0))

    # ---------------------------------------------------------------------------------- reindex

    def reindex(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Copy the live index into a new version built from the current settings, without downtime.

        1. create `<alias>-v<N+1>` and move the write alias to it in one `_aliases` call: from then on
           every write and delete reaches the new index;
        2. `_reindex` v<N> into it as a task (op_type create: a copy never overwrites a newer write;
           conflicts=proceed counts those instead of aborting), recomputing `filterable` from the
           declared fields, and poll the tasks API for progress;
        3. sweep: a chunk deleted from v<N> after the copy's snapshot but before the copy reached it
           was copied anyway; every copied chunk no longer in v<N> is deleted from v<N+1>, and one
           whose `active` changed in v<N> meanwhile gets the new value;
        4. move the read alias to v<N+1> in one `_aliases` call. v<N> is kept for rollback.

        If it stops after step 1, writes go to v<N+1> and reads still come from v<N>; running it again
        resumes from step 2. A new embedding model (another dimension) needs re-ingestion instead."""
        say = progress or (lambda _line: None)
        versions = self._versions()
        read, write = self._alias_targets(versions)
        if len(read) != 1:
            raise SearchIndexError(f"read alias {self._alias} points at {read}; expected one index")
        source = read[0]
        if not write:
            write = [self._add_write_alias(read)]
        if len(write) != 1:
            raise SearchIndexError(f"write alias {self.write_alias} points at {write}; expected one index")
        if write[0] == source:
            target = self._index_name(max(map(self._number, versions)) + 1)
            self._create(target, aliases=False)
            say(f"created {target}")
            self._move_alias(self.write_alias, source, target, is_write_index=True)
            say(f"writes now go to {target}")
        elif self._number(write[0]) > self._number(source):
            target = write[0]
            say(f"resuming: writes already go to {target}, reads still come from {source}")
        else:
            raise SearchIndexError(
                f"writes go to {write[0]} but reads come from the newer {source}; move one"
            )
        copied = self._copy(source, target, say)
        swept, corrected = self._sweep(source, target, say)
        self._move_alias(self._alias, source, target)
        say(f"reads now come from {target}; {source} is kept for rollback")
        return {
            "index": target,
            "previous_index": source,
            "total": copied.get("total", 0),
            "created": copied.get("created", 0),
            "version_conflicts": copied.get("version_conflicts", 0),
            "swept": swept,
            "active_corrected": corrected,
        }

    def _move_alias(self, alias: str, source: str, target: str, *, is_write_index: bool = False) -> None:
        """Remove from `source` and add to `target` in one request: no moment without the alias.
        https://docs.opensearch.org/latest/api-reference/alias/aliases-api/ (atomic actions)"""
        add: dict[str, Any] = {"index": target, "alias": alias}
        if is_write_index:
            add["is_write_index"] = True
        actions = [{"remove": {"index": source, "alias": alias}}, {"add": add}]
        response = self._client.indices.update_aliases(body={"actions": actions})
        if not response.get("acknowledged"):
            log.warning("moving %s to %s was not acknowledged by every node yet", alias, target)

    def _copy(self, source: str, target: str, say: Callable[[str], None]) -> dict[str, Any]:
        """_reindex as a task, polled until done; returns its final status.
        https://docs.opensearch.org/latest/api-reference/document-apis/reindex/ (body, async operations)"""
        body = {
            "conflicts": "proceed",
            "source": {"index": source},
            "dest": {"index": target, "op_type": "create"},
            "script": {
                "lang": "painless",
                "source": _COPY_SCRIPT,
                "params": {"fields": {name: str(kind) for name, kind in self._fields}, "source": source},
            },
        }
        # refresh=true: the sweep that follows searches the copies.
        task = self._client.reindex(body=body, wait_for_completion=False, refresh=True)["task"]
        say(f"copying {source} -> {target} (task {task})")
        while True:
            # GET _tasks/<id>: {completed, task: {status: {total, created, ...}}, response | error}
            # (opensearch-api-specification, tasks.get@200)
            answer = self._client.tasks.get(task_id=task)
            if answer.get("completed"):
                break
            status = answer.get("task", {}).get("status", {})
            say(f"copied {status.get('created', 0)}/{status.get('total', 0)}")
            self._sleep(self._reindex_poll_s)
        if answer.get("error"):
            raise SearchIndexError(f"reindex task {task} failed: {answer['error']}; run it again to resume")
        result = answer.get("response", {})
        if result.get("failures") or result.get("timed_out") or result.get("canceled"):
            failures = result.get("failures", [])
            log.error("reindex task %s: %d failure(s): %s", task, len(failures), failures[:10])
            raise SearchIndexError(
                f"reindex task {task} did not copy everything ({len(failures)} failure(s), "
                f"timed_out={result.get('timed_out')}, canceled={result.get('canceled')}); "
                "reads still come from the old index; run it again to resume"
            )
        say(
            f"copied {result.get('created', 0)}/{result.get('total', 0)} "
            f"({result.get('version_conflicts', 0)} already rewritten in {target})"
        )
        return result

    def _sweep(self, source: str, target: str, say: Callable[[str], None]) -> tuple[int, int]:
        """For every chunk the copy wrote (copied_from == source): delete it from `target` if `source`
        no longer has it, and give it `source`'s `active` if that changed after the copy's snapshot
        (a set_active that reached `target` before the copy did). Pages by chunk_id with search_after;
        a chunk written or set active meanwhile has lost its mark and is left alone, and a chunk that
        changes between this check and the fix is skipped (conflicts=proceed): it holds a newer
        value. Returns (deleted, flags corrected)."""
        copied = {"term": {"copied_from": source}}
        after: list[Any] | None = None
        checked = swept = corrected = 0
        while True:
            body: dict[str, Any] = {
                "size": self._sweep_page,
                "_source": ["active"],
                "track_total_hits": False,
                "query": {"bool": {"filter": [copied]}},
                "sort": [{"chunk_id": "asc"}],
            }
            if after is not None:
                body["search_after"] = after
            hits = _hits(self._client.search(index=target, body=body))
            if not hits:
                break
            copies = {hit["_id"]: _active(hit) for hit in hits}
            originals = self._active_in(source, list(copies))
            gone = [chunk_id for chunk_id in copies if chunk_id not in originals]
            if gone:
                swept += self._delete_by_query(
                    [target], [{"ids": {"values": gone}}, copied], f"sweep of {target}"
                )
            for flag in (True, False):
                stale = [i for i, now in originals.items() if now is flag and copies[i] is not flag]
                if stale:
                    corrected += self._correct(target, [{"ids": {"values": stale}}, copied], flag)
            checked += len(copies)
            after = hits[-1]["sort"]
            if len(hits) < self._sweep_page:
                break
        say(
            f"swept {swept} chunk(s) deleted during the copy and corrected {corrected} active flag(s) "
            f"changed during it ({checked} checked)"
        )
        return swept, corrected

    def _active_in(self, index: str, ids: list[str]) -> dict[str, bool]:
        """Whether each chunk `index` has is active; chunks it lacks are left out."""
        # _mget answers one doc per id, in order: found true/false, or an error for that id.
        docs = self._client.mget(index=index, body={"ids": ids}, _source=["active"])["docs"]
        errors = [doc for doc in docs if "error" in doc]
        if errors:
            raise SearchIndexError(f"checking {len(ids)} chunk(s) in {index} failed: {errors[:3]}")
        return {doc["_id"]: _active(doc) for doc in docs if doc.get("found")}

    def _correct(self, index: str, filters: list[dict[str, Any]], active: bool) -> int:
        response = self._client.update_by_query(
            index=[index],
            body={
                "query": {"bool": {"filter": filters}},
                "script": {"lang": "painless", "source": _SET_ACTIVE_SCRIPT, "params": {"active": active}},
            },
            refresh=True,
            conflicts="proceed",
        )
        if response.get("failures") or response.get("timed_out"):
            raise SearchIndexError(f"correcting active flags in {index} failed: {response.get('failures')}")
        return int(response.get("updated", 0))

    # ---------------------------------------------------------------------------------- reads

    def keyword_search(self, query: str, flt: SearchFilter, k: int) -> list[ScoredChunk]:
        if not flt.groups_any:
            return []
        boosts = {"text": 1.0, "title": self._title_boost, "heading_path": self._heading_boost}
        fields = [name if boost == 1 else f"{name}^{boost:g}" for name, boost in boosts.items() if boost > 0]
        match = {
            "query": query,
            # best_fields: a chunk scores as its best field times that field's boost, which is how
            # the embedded engine (LanceDB) scores a multi-field query, so local relevance predicts
            # this one. (cross_fields would blend the fields; measured locally it cannot be.)
            "type": "best_fields",
            "fields": fields,
            # An index from before heading_path was text has it as an unsearchable keyword:
            # lenient makes that field match nothing instead of failing the query until `reindex`.
            "lenient": True,
        }
        body = {
            "size": k,
            "track_total_hits": False,
            "_source": {"excludes": _SOURCE_EXCLUDES},
            "query": {"bool": {"must": [{"multi_match": match}], "filter": filter_clauses(flt)}},
        }
        return [ScoredChunk(chunk=chunk, score=score) for chunk, score in self._search(body)]

    def vector_search(self, vector: Sequence[float], flt: SearchFilter, k: int) -> list[ScoredChunk]:
        if not flt.groups_any:
            return []
        body = {
            "size": k,
            "track_total_hits": False,
            "_source": {"excludes": _SOURCE_EXCLUDES},
            # Efficient filtering: the filter goes inside the knn clause, never in an outer bool.
            # https://docs.opensearch.org/latest/vector-search/filter-search-knn/efficient-knn-filtering/
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
        hits = _hits(self._client.search(index=self._alias, body=body))
        return [(_chunk(hit["_source"]), float(hit["_score"])) for hit in hits]

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
    """The caller's visibility and scoping as `bool.filter` clauses, active chunks only. Never called
    with empty groups."""
    clauses: list[dict[str, Any]] = [{"terms": {"allowed_groups": sorted(flt.groups_any)}}]
    if flt.tenant is None:
        clauses.append({"bool": {"must_not": [{"exists": {"field": "tenant"}}]}})
    else:
        clauses.append({"term": {"tenant": flt.tenant}})
    clauses.append(ACTIVE)
    if flt.collection is not None:
        clauses.append({"term": {"collection": flt.collection}})
    clauses.extend(_condition(condition) for condition in flt.conditions)
    return clauses


def _condition(condition: Condition) -> dict[str, Any]:
    field = f"filterable.{condition.field}"
    if isinstance(condition, MatchAny):
        return {"terms": {field: [_json(value) for value in condition.values]}}
    bounds = {op: getattr(condition, op) for op in ("gt", "gte", "lt", "lte")}
    bounds = {op: _json(value) for op, value in bounds.items() if value is not None}
    # No bound at all: any value (the Lance adapter's IS NOT NULL).
    return {"range": {field: bounds}} if bounds else {"exists": {"field": field}}


def _mapping_diff(wanted: dict[str, Any], have: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The properties `have` lacks, and the names whose type differs. Recurses into object fields."""
    missing: dict[str, Any] = {}
    conflicts: list[str] = []
    for name, spec in wanted.items():
        if name not in have:
            missing[name] = spec
            continue
        kind, existing = spec.get("type", "object"), have[name].get("type", "object")
        if kind != existing:
            conflicts.append(f"{name} ({existing}, wanted {kind})")
        elif "properties" in spec:
            sub_missing, sub_conflicts = _mapping_diff(spec["properties"], have[name].get("properties", {}))
            if sub_missing:
                missing[name] = {"properties": sub_missing}
            conflicts.extend(f"{name}.{conflict}" for conflict in sub_conflicts)
    return missing, conflicts


def _hits(response: dict[str, Any]) -> list[dict[str, Any]]:
    _check_shards(response, "search")
    if response.get("timed_out"):
        log.warning("search timed out; results may be partial")
    return response["hits"]["hits"]


def _check_shards(response: dict[str, Any], what: str) -> None:
    shards = response.get("_shards", {})
    if shards.get("failed"):
        # Raised, not just logged: a shard that failed silently drops its chunks, and an answer
        # built on part of the corpus looks exactly like a complete one. The caller retries or
        # reports a 5xx; neither leaks anything.
        log.error(
            "%s failed on %s of %s shards: %s",
            what,
            shards["failed"],
            shards.get("total"),
            shards.get("failures"),
        )
        raise SearchIndexError(f"{what} failed on {shards['failed']} of {shards.get('total')} shards")


def _version_terms(document_id: str, version: int | None) -> list[dict[str, Any]]:
    terms: list[dict[str, Any]] = [{"term": {"document_id": document_id}}]
    if version is not None:
        terms.append({"term": {"version": version}})
    return terms


def _active(doc: dict[str, Any]) -> bool:
    """A hit's or _mget doc's `active` (fetched with `_source: ["active"]`); missing means active."""
    return doc.get("_source", {}).get("active") is not False


def _json(value: TypedValue) -> str | float | bool | int:
    return _epoch_millis(value) if isinstance(value, datetime) else value


def _epoch_millis(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _chunk(source: dict[str, Any]) -> Chunk:
    return Chunk.model_validate({name: source[name] for name in Chunk.model_fields if name in source})
