"""The search index port on LanceDB: the embedded index of the local platform (a directory on disk).

- BM25: native Lance FTS indexes on `text` and `title` (English stemming, stop words, lower case,
  ASCII folding), queried together with title boosted x2 like the OpenSearch adapter. Rows written
  after the index was last built are still searched (flat), so writes are visible at once;
  `optimize()` after each upsert folds them into the index so searches stay fast.
- Vectors: exact cosine search (no ANN index: a laptop corpus is small and brute force has
  perfect recall). score = 1 - cosine distance = cosine similarity, the scale the OpenSearch
  adapter reports too.
- Filters are SQL `WHERE` clauses applied as pre-filters, so k visible rows come back when k exist.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from lancedb.db import DBConnection
from lancedb.index import FTS
from lancedb.query import MultiMatchQuery
from lancedb.table import Table

from ragline.contracts import Chunk, MetadataValue
from ragline.search.port import IndexedChunk, ScoredChunk, SearchFilter

_FTS_COLUMNS = ("text", "title")
_FTS_BOOSTS = (1.0, 2.0)


def schema(dimension: int) -> pa.Schema:
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
            # One token per metadata entry, for equality filters with array_has (see metadata_token).
            pa.field("metadata_kv", pa.list_(pa.string())),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
        ]
    )


def metadata_token(key: str, value: MetadataValue) -> str:
    """A metadata entry as one comparable string: JSON of [key, value-as-text]. JSON keeps a key with
    '=' in it unambiguous; values compare as text, like OpenSearch's flat_object (2024 == "2024")."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return json.dumps([key, text], ensure_ascii=False)


def sql_string(value: str) -> str:
    """A SQL string literal (DataFusion: quotes doubled, no backslash escapes)."""
    return "'" + value.replace("'", "''") + "'"


def where_clause(flt: SearchFilter) -> str:
    """The caller's visibility and scoping as one SQL predicate. Never called with empty groups."""
    groups = ", ".join(sql_string(g) for g in sorted(flt.groups_any))
    parts = [f"array_has_any(allowed_groups, [{groups}])"]
    parts.append("tenant IS NULL" if flt.tenant is None else f"tenant = {sql_string(flt.tenant)}")
    if flt.collection is not None:
        parts.append(f"collection = {sql_string(flt.collection)}")
    for key, value in sorted(flt.metadata.items()):
        parts.append(f"array_has(metadata_kv, {sql_string(metadata_token(key, value))})")
    return " AND ".join(parts)


class LanceIndex:
    """`SearchIndex` on one LanceDB table. The connection is built by the caller (see the factory)."""

    def __init__(
        self, db: DBConnection, table: str, *, dimension: int, optimize_after_rows: int = 2000
    ) -> None:
        self._db = db
        self._name = table
        self._dimension = dimension
        self._schema = schema(dimension)
        self._table: Table | None = None
        # Rows written since the last optimize() are searched without the FTS index (correct, just
        # slower); optimizing after every write costs more the larger the table (about 150 ms at
        # 2,000 rows here), so fold them in once enough have piled up.
        self._optimize_after = optimize_after_rows
        self._unoptimized = 0

    def ensure_index(self) -> None:
        table = self._db.create_table(self._name, schema=self._schema, exist_ok=True)
        existing = {column for index in table.list_indices() for column in index.columns}
        for column in _FTS_COLUMNS:
            if column not in existing:
                table.create_index(column, config=FTS(language="English", stem=True, remove_stop_words=True))
        self._table = table

    def upsert(self, items: Sequence[IndexedChunk]) -> None:
        if not items:
            return
        table = self._writable()
        rows = pa.Table.from_pylist([self._row(item) for item in items], schema=self._schema)
        table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
        self._unoptimized += len(items)
        if self._unoptimized >= self._optimize_after:
            self.optimize()

    def optimize(self) -> None:
        """Fold new rows into the FTS indexes and compact the table's fragments."""
        table = self._writable()
        table.optimize()
        self._unoptimized = 0

    def delete_document(self, document_id: str, version: int | None = None) -> int:
        table = self._readable()
        if table is None:
            return 0
        predicate = f"document_id = {sql_string(document_id)}"
        if version is not None:
            predicate += f" AND version = {int(version)}"
        return table.delete(predicate).num_deleted_rows

    def keyword_search(self, query: str, flt: SearchFilter, k: int) -> list[ScoredChunk]:
        table = self._readable()
        if table is None or not flt.groups_any:
            return []
        rows = (
            table.search(
                MultiMatchQuery(query, list(_FTS_COLUMNS), boosts=list(_FTS_BOOSTS)), query_type="fts"
            )
            .where(where_clause(flt), prefilter=True)
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
            .where(where_clause(flt), prefilter=True)
            .select([*self._columns(), "_distance"])
            .limit(k)
            .to_list()
        )
        return [ScoredChunk(chunk=_chunk(row), score=1.0 - float(row["_distance"])) for row in rows]

    # ------------------------------------------------------------------------------------------

    def _columns(self) -> list[str]:
        return [name for name in self._schema.names if name not in ("vector", "metadata_kv")]

    def _writable(self) -> Table:
        if self._table is None:
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

    def _row(self, item: IndexedChunk) -> dict[str, Any]:
        chunk = item.chunk
        if len(item.vector) != self._dimension:
            raise ValueError(
                f"{chunk.chunk_id}: vector has {len(item.vector)} dimensions, not {self._dimension}"
            )
        return chunk.model_dump(mode="json", exclude={"metadata"}) | {
            "chunk_id": chunk.chunk_id,
            "metadata": json.dumps(chunk.metadata, ensure_ascii=False),
            "metadata_kv": [metadata_token(key, value) for key, value in chunk.metadata.items()],
            "vector": [float(x) for x in item.vector],
        }


def _chunk(row: dict[str, Any]) -> Chunk:
    fields = {name: row[name] for name in Chunk.model_fields if name != "metadata"}
    return Chunk.model_validate(fields | {"metadata": json.loads(row["metadata"])})
