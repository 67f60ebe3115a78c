"""The search index port on LanceDB: the embedded index of the local platform (a directory on disk).

- BM25: native Lance FTS indexes on `text`, `title` and `heading_path`, analysed like the OpenSearch
  adapter's English text fields as far as Lance allows (lower case, ASCII folding, English stop
  words, English Snowball stemming), queried as one best-field multi-match with the title and
  headings boosted. A boost of 0 leaves that field out.
- Vectors: exact cosine search. score = 1 - cosine distance = cosine similarity, the scale the
  OpenSearch adapter reports too.
- Filters are SQL `WHERE` clauses applied as pre-filters, so k visible rows come back when k exist.
  Every search also requires `active = TRUE` (a version written inactive by the update saga stays
  out of results until `set_active`); a table from before the column gains it in `ensure_index`,
  every existing row active.
  Each declared metadata field (ragline.search.fields) has its own typed column, so a number range
  compares numbers and a date range compares instants; the `metadata` JSON column rebuilds
  Chunk.metadata. A table from before a field was declared gains its column in `ensure_index`, and
  `reindex` fills it from the JSON (the local counterpart of the OpenSearch alias rebuild).
- Rows written since the indexes were last optimized are searched without them (flat) and deleted
  rows are masked at once, so a write or delete is visible to the very next search; `optimize()`
  folds new rows into every index, and a write runs it once the flat rows reach a tenth of the
  table, between 16 and 100 rows (`_due`).

Indexes, and what each was measured to save: `_indexes`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from lancedb.db import DBConnection
from lancedb.index import FTS, Bitmap, BTree, IvfFlat, LabelList
from lancedb.query import MultiMatchQuery
from lancedb.table import Table

from ragline.contracts import Chunk, FilterableFieldType
from ragline.search.fields import Condition, FilterableFields, MatchAny, TypedValue
from ragline.search.port import IndexedChunk, ScoredChunk, SearchFilter, VersionCount

# The OpenSearch adapter's English analysis, as far as Lance has it: no possessive filter, and
# Snowball (Porter2) stemming where OpenSearch's `english` analyzer uses Porter.
_ANALYZER = FTS(
    base_tokenizer="simple",
    language="English",
    lower_case=True,
    ascii_folding=True,
    remove_stop_words=True,
    stem=True,
    with_position=False,
)

_TYPED_PREFIX = "f_"
_ARROW_TYPES = {
    FilterableFieldType.KEYWORD: pa.string(),
    FilterableFieldType.NUMBER: pa.float64(),
    FilterableFieldType.DATE: pa.timestamp("ms", tz="UTC"),
    FilterableFieldType.BOOLEAN: pa.bool_(),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_REINDEX_BATCH = 10_000
# The index whose unindexed rows tell how many rows searches read flat (every index covers the same rows).
_FLAT_PROBE = "text_idx"
# More partitions than any index of ours has: every partition is searched, so the search is exact.
_ALL_PARTITIONS = 1 << 20


def schema(dimension: int) -> pa.Schema:
    """The columns every table has; the typed filter columns come after them (`typed_column`)."""
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("document_id", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("ordinal", pa.int32(), nullable=False),
            pa.field("collection", pa.string(), nullable=False),
            pa.field("title", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("token_count", pa.int32(), nullable=False),
            pa.field("heading_path", pa.list_(pa.string())),
            pa.field("page", pa.int32(), nullable=True),
            pa.field("char_start", pa.int32(), nullable=False),
            pa.field("char_end", pa.int32(), nullable=False),
            pa.field("allowed_groups", pa.list_(pa.string())),
            pa.field("tenant", pa.string(), nullable=True),
            pa.field("metadata", pa.string(), nullable=False),  # JSON object, rebuilds Chunk.metadata
            pa.field("vector", pa.list_(pa.float32(), dimension)),
            pa.field("active", pa.bool_(), nullable=False),  # searches see active rows only
        ]
    )


def typed_column(name: str, kind: FilterableFieldType) -> pa.Field:
    """The column of a declared field. The type is part of the name, so re-declaring a field with
    another type adds a new column instead of reading old values as the new type. Names that are not
    plain lower-case identifiers are hex-encoded after a double underscore (a plain name cannot start
    with one), so any field name gives a distinct column that needs no quoting in SQL."""
    kind = FilterableFieldType(kind)
    suffix = name if _SAFE_NAME.fullmatch(name) else "_" + name.encode().hex()
    return pa.field(f"{_TYPED_PREFIX}{kind.value}_{suffix}", _ARROW_TYPES[kind], nullable=True)


def sql_string(value: str) -> str:
    """A SQL string literal (DataFusion: quotes doubled, no backslash escapes)."""
    return "'" + value.replace("'", "''") + "'"


def _epoch_ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def sql_literal(kind: FilterableFieldType, value: TypedValue) -> str:
    """A typed value as a literal of its column's type: instants as UTC millisecond timestamps (not
    strings), numbers as floats, booleans as TRUE/FALSE."""
    kind = FilterableFieldType(kind)
    if kind is FilterableFieldType.KEYWORD and isinstance(value, str):
        return sql_string(value)
    if kind is FilterableFieldType.BOOLEAN and isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is FilterableFieldType.NUMBER and number:
        return repr(float(value))
    if kind is FilterableFieldType.DATE and isinstance(value, datetime) and value.tzinfo is not None:
        return f"arrow_cast({_epoch_ms(value)}, 'Timestamp(Millisecond, Some(\"UTC\"))')"
    raise ValueError(f"{value!r} is not a {kind} value")


def condition_clause(condition: Condition, columns: set[str]) -> str:
    """One condition as SQL. A field without a column in the table (declared after the table was last
    evolved) matches nothing, like a document that lacks the field."""
    column = typed_column(condition.field, condition.type).name
    if column not in columns:
        return "FALSE"
    if isinstance(condition, MatchAny):
        if not condition.values:
            return "FALSE"
        values = ", ".join(sql_literal(condition.type, v) for v in condition.values)
        return f"{column} IN ({values})"
    bounds = [(">", condition.gt), (">=", condition.gte), ("<", condition.lt), ("<=", condition.lte)]
    parts = [f"{column} {op} {sql_literal(condition.type, v)}" for op, v in bounds if v is not None]
    return " AND ".join(parts) if parts else f"{column} IS NOT NULL"


def where_clause(flt: SearchFilter, columns: set[str]) -> str:
    """The caller's visibility and scoping as one SQL predicate, active rows only (a table from
    before the `active` column, not yet evolved by a writer, has only active rows). Never called with
    empty groups."""
    groups = ", ".join(sql_string(g) for g in sorted(flt.groups_any))
    parts = [f"array_has_any(allowed_groups, [{groups}])"]
    parts.append("tenant IS NULL" if flt.tenant is None else f"tenant = {sql_string(flt.tenant)}")
    if "active" in columns:
        parts.append("active = TRUE")
    if flt.collection is not None:
        parts.append(f"collection = {sql_string(flt.collection)}")
    parts.extend(f"({condition_clause(c, columns)})" for c in flt.conditions)
    return " AND ".join(parts)


class LanceIndex:
    """`SearchIndex` on one LanceDB table. The connection is built by the caller (see the factory)."""

    def __init__(
        self,
        db: DBConnection,
        table: str,
        *,
        dimension: int,
        fields: FilterableFields = FilterableFields({}),
        title_boost: float = 2.0,
        heading_boost: float = 1.0,
        optimize_after_rows: int = 100,
        optimize_min_rows: int = 16,
        optimize_fraction: float = 0.1,
    ) -> None:
        self._db = db
        self._name = table
        self._dimension = dimension
        self._fields = fields
        self._typed = {name: typed_column(name, kind) for name, kind in fields}
        self._schema = schema(dimension)
        # A boost of 0 leaves the field out of the query, as in the OpenSearch adapter.
        boosts = {"text": 1.0, "title": title_boost, "heading_path": heading_boost}
        self._match_columns = [column for column, boost in boosts.items() if boost > 0]
        self._match_boosts = [boosts[column] for column in self._match_columns]
        self._table: Table | None = None
        self._ensured = False
        # Flat rows (written since the last optimize, by any writer) cost every search; optimize
        # costs the write. See `_due`.
        self._optimize_after = optimize_after_rows
        self._optimize_min = optimize_min_rows
        self._optimize_fraction = optimize_fraction
        self._unoptimized = 0

    # ---------------------------------------------------------------------------------- schema

    def ensure_index(self) -> None:
        """Create the table if missing, add the `active` column to a table from before it (every
        existing row active), the columns of newly declared fields (null until `reindex` fills them
        from each row's metadata) and any missing index."""
        try:
            table = self._db.open_table(self._name)
        except (FileNotFoundError, ValueError):
            full = pa.schema([*self._schema, *self._typed.values()])
            table = self._db.create_table(self._name, schema=full, exist_ok=True)
        if "active" not in table.schema.names:
            table.add_columns({"active": "TRUE"})  # a SQL expression: a non-null column, all true
        present = set(table.schema.names)
        missing = [column for column in self._typed.values() if column.name not in present]
        if missing:
            table.add_columns(missing)
        self._create_indexes(table, replace=False)
        self._table = table
        self._ensured = True

    def _indexes(self) -> dict[str, Any]:
        """Every index the adapter keeps, by column; optimize() extends them all with new rows.

        p50 at 100k chunks (384-d, the caller sees 10%, 2 shared cores; results identical with and
        without every index): the vector index takes exact vector search from 85-125 to 15 ms; the
        ACL LabelList and id BTrees take keyword search from 23-27 to 18 ms and vector search from
        19-20 to 14-16 ms, an upsert from 14 to 8 ms and a delete from 7 to 3-6 ms; the bitmaps and
        the typed columns' indexes cut 1-3 ms from searches that filter on them."""
        fts = {column: _ANALYZER for column in ("text", "title", "heading_path")}
        typed = {
            column.name: Bitmap() if column.type == pa.bool_() else BTree() for column in self._typed.values()
        }
        return (
            fts
            | {
                # One partition: nothing is clustered, so nothing is approximate; the index keeps the
                # vectors contiguous and cached in memory instead of reading each pre-filtered row's
                # vector from the table. (IVF_PQ and IVF_HNSW_SQ reached recall@10 0.71 and 0.83.)
                "vector": IvfFlat(distance_type="cosine", num_partitions=1),
                "allowed_groups": LabelList(),  # array_has_any: the ACL on every query
                "tenant": Bitmap(),
                "collection": Bitmap(),
                "active": Bitmap(),  # `active = TRUE` on every query
                "chunk_id": BTree(),  # merge_insert's join key
                "document_id": BTree(),  # delete_document
            }
            | typed
        )

    def _create_indexes(self, table: Table, *, replace: bool) -> list[str]:
        indexed = {column for index in table.list_indices() for column in index.columns}
        built = []
        for column, config in self._indexes().items():
            if replace or column not in indexed:
                table.create_index(column, config=config, replace=True)
                built.append(column)
        return built

    def reindex(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Bring the whole table in line with the declared fields: add missing typed columns, drop
        those of fields no longer declared, recompute every row's typed values from its metadata
        JSON, rebuild every index and optimize. Safe while others write: rows are matched by chunk
        id (a chunk id names one version of a chunk) and only updated, never re-inserted."""
        report = progress or (lambda _message: None)
        self.ensure_index()
        table = self._writable()
        wanted = {column.name for column in self._typed.values()}
        stale = [n for n in table.schema.names if n.startswith(_TYPED_PREFIX) and n not in wanted]
        if stale:
            table.drop_columns(stale)
            report(f"dropped columns of undeclared fields: {', '.join(stale)}")

        rows = table.search().select(["chunk_id", "metadata"]).limit(None).to_arrow()
        updated = 0
        if self._typed:
            typed_schema = pa.schema([self._schema.field("chunk_id"), *self._typed.values()])
            for start in range(0, rows.num_rows, _REINDEX_BATCH):
                batch = rows.slice(start, _REINDEX_BATCH).to_pylist()
                values = [
                    {"chunk_id": row["chunk_id"]} | self._typed_values(json.loads(row["metadata"]))
                    for row in batch
                ]
                result = (
                    table.merge_insert("chunk_id")
                    .when_matched_update_all()
                    .execute(pa.Table.from_pylist(values, schema=typed_schema))
                )
                updated += result.num_updated_rows
                report(
                    f"recomputed typed columns of {min(start + len(batch), rows.num_rows)}/{rows.num_rows} rows"
                )

        rebuilt = self._create_indexes(table, replace=True)
        report(f"rebuilt indexes on {', '.join(rebuilt)}")
        self.optimize()
        report("optimized")
        return {
            "rows": rows.num_rows,
            "rows_updated": updated,
            "typed_columns": sorted(wanted),
            "columns_dropped": stale,
            "indexes_rebuilt": rebuilt,
        }

    # ---------------------------------------------------------------------------------- writes

    def upsert(self, items: Sequence[IndexedChunk]) -> None:
        if not items:
            return
        table = self._writable()
        # The table's own schema: an older table may carry columns this version no longer writes
        # (they are left null) and has its typed columns in the order they were added.
        rows = pa.Table.from_pylist([self._row(item) for item in items], schema=table.schema)
        table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
        self._wrote(len(items))

    def _wrote(self, rows: int) -> None:
        self._unoptimized += rows
        if self._due():
            self.optimize()

    def _due(self) -> bool:
        """Whether the rows outside the indexes (written by any writer, as the text index counts
        them) reach a tenth of the table, at least `optimize_min_rows` and at most
        `optimize_after_rows`.

        Flat rows cost every search, the more when they come one document (one fragment) at a
        time: with the 175 rows of 76 SciFact abstracts written so and all flat, as the old policy
        (optimize after 2,000 rows from this writer) left them, hybrid search took 104 ms at p50,
        47 ms under this one; keyword 57 against 15, vector 48 against 36 (`bench.retrieval
        optimize`, 2 shared cores). optimize() costs the write it runs in, but it also compacts the
        fragments, which makes the following writes cheaper: per upsert 11 against 13-15 ms at p50,
        a mean of 20 against 16 ms into this small table and of 31 against 32 ms into a 20,000-row
        one. Through the whole pipeline it cost about 35 ms of CPU per document
        (docs/performance.md), against 40-55 ms saved on every search."""
        stats = self._writable().index_stats(_FLAT_PROBE)
        if stats is None:  # no text index (not expected): count this writer's rows
            flat, total = self._unoptimized, self._unoptimized
        else:
            flat, total = stats.num_unindexed_rows, stats.num_indexed_rows + stats.num_unindexed_rows
        floor = max(self._optimize_min, int(total * self._optimize_fraction))
        return flat > 0 and flat >= min(self._optimize_after, floor)

    def optimize(self) -> None:
        """Fold new rows into the indexes and compact the table's fragments."""
        table = self._writable()
        table.optimize()
        self._unoptimized = 0

    def set_active(self, document_id: str, version: int, active: bool) -> int:
        """Rewrites the version's rows with the flag (the rewritten rows are searched flat until the
        next optimize, like new ones), so the next search sees the change."""
        where = _version_predicate(document_id, version)
        updated = self._writable().update(where=where, values={"active": active}).rows_updated
        self._wrote(updated)
        return updated

    def delete_document(self, document_id: str, version: int | None = None) -> int:
        table = self._readable()
        if table is None:
            return 0
        return table.delete(_version_predicate(document_id, version)).num_deleted_rows

    def count(self, document_id: str, version: int | None = None, *, active: bool | None = None) -> int:
        table = self._readable()
        if table is None:
            return 0
        predicate = _version_predicate(document_id, version)
        if active is not None and "active" in table.schema.names:
            predicate += f" AND active = {'TRUE' if active else 'FALSE'}"
        elif active is False:  # a table from before the column: every row is active
            return 0
        return table.count_rows(predicate)

    def inventory(self, after: tuple[str, int] | None = None, size: int = 1000) -> list[VersionCount]:
        """Grouped in Arrow over a scan of three columns (the local table is small enough to read
        whole; OpenSearch pages a composite aggregation instead)."""
        table = self._readable()
        if table is None:
            return []
        where = None
        if after is not None:
            document_id, version = after
            where = (
                f"document_id > {sql_string(document_id)}"
                f" OR (document_id = {sql_string(document_id)} AND version > {int(version)})"
            )
        columns = ["document_id", "version", *(["active"] if "active" in table.schema.names else [])]
        query = table.search().select(columns).limit(None)
        rows = (query.where(where) if where else query).to_arrow()
        if "active" not in rows.column_names:  # a table from before the column: every row is active
            rows = rows.append_column("active", pa.array([True] * rows.num_rows))
        grouped = rows.group_by(["document_id", "version", "active"]).aggregate([([], "count_all")])
        counts: dict[tuple[str, int], list[int]] = {}
        for row in grouped.to_pylist():
            pair = counts.setdefault((row["document_id"], int(row["version"])), [0, 0])
            pair[0 if row["active"] else 1] += row["count_all"]
        return [VersionCount(d, v, *counts[(d, v)]) for d, v in sorted(counts)[:size]]

    # ---------------------------------------------------------------------------------- reads

    def keyword_search(self, query: str, flt: SearchFilter, k: int) -> list[ScoredChunk]:
        table = self._readable()
        if table is None or not flt.groups_any:
            return []
        match = MultiMatchQuery(query, self._match_columns, boosts=self._match_boosts)
        rows = (
            table.search(match, query_type="fts")
            .where(where_clause(flt, set(table.schema.names)), prefilter=True)
            .select([*self._columns(), "_score"])
            .limit(k)
            .to_list()
        )
        return [ScoredChunk(chunk=_chunk(row), score=float(row["_score"])) for row in rows]

    def vector_search(self, vector: Sequence[float], flt: SearchFilter, k: int) -> list[ScoredChunk]:
        table = self._readable()
        if table is None or not flt.groups_any:
            return []
        if len(vector) != self._dimension:
            raise ValueError(f"vector has {len(vector)} dimensions, the index has {self._dimension}")
        rows = (
            table.search(list(vector), vector_column_name="vector", query_type="vector")
            .distance_type("cosine")
            .nprobes(_ALL_PARTITIONS)
            .where(where_clause(flt, set(table.schema.names)), prefilter=True)
            .select([*self._columns(), "_distance"])
            .limit(k)
            .to_list()
        )
        return [ScoredChunk(chunk=_chunk(row), score=1.0 - float(row["_distance"])) for row in rows]

    # ------------------------------------------------------------------------------------------

    def _columns(self) -> list[str]:
        """What a hit reads: the Chunk's columns (a table not yet evolved may lack `active`)."""
        return [name for name in self._schema.names if name not in ("vector", "active")]

    def _writable(self) -> Table:
        if not self._ensured:
            self.ensure_index()
        assert self._table is not None
        return self._table

    def _readable(self) -> Table | None:
        """The table at its latest version (another process may have written), or None before the
        first write anywhere: a reader never creates the table."""
        if self._table is None:
            try:
                self._table = self._db.open_table(self._name)
            except (FileNotFoundError, ValueError):
                return None
        self._table.checkout_latest()
        return self._table

    def _typed_values(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Every typed column of the row (null when the chunk lacks the field); instants as epoch
        milliseconds so sub-millisecond parts are floored the same way as in `sql_literal`."""
        typed = self._fields.typed(metadata)
        values: dict[str, Any] = {}
        for name, column in self._typed.items():
            value = typed.get(name)
            values[column.name] = _epoch_ms(value) if isinstance(value, datetime) else value
        return values

    def _row(self, item: IndexedChunk) -> dict[str, Any]:
        chunk = item.chunk
        if len(item.vector) != self._dimension:
            raise ValueError(
                f"{chunk.chunk_id}: vector has {len(item.vector)} dimensions, not {self._dimension}"
            )
        return (
            chunk.model_dump(mode="json", exclude={"metadata"})
            | {
                "chunk_id": chunk.chunk_id,
                "metadata": json.dumps(chunk.metadata, ensure_ascii=False),
                "vector": [float(x) for x in item.vector],
                "active": item.active,
            }
            | self._typed_values(chunk.metadata)
        )


def _version_predicate(document_id: str, version: int | None) -> str:
    predicate = f"document_id = {sql_string(document_id)}"
    return predicate if version is None else f"{predicate} AND version = {int(version)}"


def _chunk(row: dict[str, Any]) -> Chunk:
    fields = {name: row[name] for name in Chunk.model_fields if name != "metadata"}
    return Chunk.model_validate(fields | {"metadata": json.loads(row["metadata"])})
