"""`ragline reindex` on a laptop: it rebuilds the local platform's index under --state-dir, so a
newly declared filterable field reaches documents indexed before it was declared."""

from __future__ import annotations

import json
from datetime import timedelta

import lancedb

from ragline.cli import main
from ragline.contracts import Chunk, RangeFilter
from ragline.search.fields import FilterableFields
from ragline.search.lance import LanceIndex
from ragline.search.port import IndexedChunk, SearchFilter
from ragline.settings import get_settings

DIM = 384


def chunk(document_id: str, year: int) -> Chunk:
    return Chunk(
        document_id=document_id,
        version=1,
        ordinal=0,
        collection="default",
        title="Report",
        text=f"Annual report {document_id}",
        token_count=3,
        char_start=0,
        char_end=10,
        allowed_groups=["staff"],
        metadata={"year": year},
    )


def test_reindex_applies_a_newly_declared_field_to_existing_chunks(tmp_path, monkeypatch, capsys):
    db = lancedb.connect(tmp_path / "index", read_consistency_interval=timedelta(0))
    before = LanceIndex(db, "ragline-chunks", dimension=DIM)
    before.ensure_index()
    before.upsert(
        [IndexedChunk(chunk(d, y), [1.0] + [0.0] * (DIM - 1)) for d, y in (("a", 2020), ("b", 2024))]
    )

    monkeypatch.delenv("RAGLINE_SEARCH_BACKEND", raising=False)
    monkeypatch.setenv("RAGLINE_METADATA_FIELDS", '{"year": "number"}')
    get_settings.cache_clear()
    try:
        assert main(["--state-dir", str(tmp_path), "reindex"]) == 0
    finally:
        get_settings.cache_clear()
    summary = json.loads(capsys.readouterr().out)
    assert summary  # the adapter's report, printed as JSON

    fields = FilterableFields({"year": "number"})
    after = LanceIndex(db, "ragline-chunks", dimension=DIM, fields=fields)
    recent = SearchFilter(
        groups_any=frozenset({"staff"}), conditions=fields.conditions({"year": RangeFilter(gte=2022)})
    )
    assert [hit.chunk.document_id for hit in after.keyword_search("annual report", recent, 10)] == ["b"]
