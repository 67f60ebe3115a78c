"""The LanceDB adapter on a real table in a temporary directory, with hand-made 4-d vectors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lancedb
import pytest

from ragline.contracts import Chunk
from ragline.search.lance import LanceIndex
from ragline.search.port import IndexedChunk, SearchFilter

DIM = 4


def chunk(document_id: str, text: str, *, version: int = 1, ordinal: int = 0, **overrides: Any) -> Chunk:
    fields = dict(
        document_id=document_id,
        version=version,
        ordinal=ordinal,
        collection="default",
        title="Notes",
        text=text,
        token_count=len(text.split()),
        heading_path=["Ops"],
        char_start=0,
        char_end=len(text),
        allowed_groups=["eng"],
        tenant=None,
        metadata={},
    )
    return Chunk(**(fields | overrides))


def item(c: Chunk, vector: list[float]) -> IndexedChunk:
    return IndexedChunk(chunk=c, vector=vector)


def connect(path) -> Any:
    return lancedb.connect(path, read_consistency_interval=timedelta(0))


@pytest.fixture
def index(tmp_path) -> LanceIndex:
    idx = LanceIndex(connect(tmp_path), "chunks", dimension=DIM)
    idx.ensure_index()
    return idx


ENG = SearchFilter(groups_any=frozenset({"eng"}))

BACKUPS = chunk(
    "backups",
    "The backup service runs every night and copies the database.",
    metadata={"team": "infra", "year": 2024},
)
CATS = chunk(
    "cats", "Cats sleep most of the day in a warm place.", collection="pets", metadata={"team": "home"}
)
PAYROLL = chunk(
    "payroll", "Running the payroll job: the backup service runs first.", allowed_groups=["finance"]
)
ACME = chunk("acme", "The acme backup service runs on Sundays.", tenant="acme")


@pytest.fixture
def corpus(index: LanceIndex) -> LanceIndex:
    index.upsert(
        [
            item(BACKUPS, [1.0, 0.0, 0.0, 0.0]),
            item(CATS, [0.0, 1.0, 0.0, 0.0]),
            item(PAYROLL, [1.0, 0.0, 0.0, 0.0]),
            item(ACME, [1.0, 0.0, 0.0, 0.0]),
        ]
    )
    return index


def ids(results) -> list[str]:
    return [r.chunk.document_id for r in results]


def test_keyword_search_matches_stemmed_forms(corpus):
    results = corpus.keyword_search("running", ENG, 10)
    assert ids(results) == ["backups"]  # "runs"; payroll says "Running" but is not visible
    assert results[0].chunk == BACKUPS
    assert results[0].score > 0


def test_keyword_search_covers_titles_and_ignores_stop_words(index):
    index.upsert(
        [
            item(chunk("titled", "Nothing relevant here.", title="Sleeping arrangements"), [0, 0, 1, 0]),
            item(CATS, [0, 1, 0, 0]),
        ]
    )
    assert set(ids(index.keyword_search("the sleep", ENG, 10))) == {"titled", "cats"}
    assert index.keyword_search("the of a", ENG, 10) == []


def test_keyword_search_takes_query_text_literally(corpus):
    assert corpus.keyword_search('backup") OR (1=1', ENG, 10)[0].chunk.document_id == "backups"


def test_vector_search_orders_by_cosine_similarity(corpus):
    results = corpus.vector_search([3.0, 1.0, 0.0, 0.0], ENG, 10)
    assert ids(results) == ["backups", "cats"]
    assert [r.score for r in results] == pytest.approx([3 / 10**0.5, 1 / 10**0.5], abs=1e-5)


def test_acl_prefilter_never_returns_invisible_chunks_even_when_they_match_best(corpus):
    # PAYROLL is an exact vector match and the best BM25 match for "running payroll"; k exceeds
    # the visible rows, so a post-filter would have room to leak it.
    assert "payroll" not in ids(corpus.vector_search([1.0, 0.0, 0.0, 0.0], ENG, 50))
    assert ids(corpus.keyword_search("running payroll", ENG, 50)) == ["backups"]
    assert len(corpus.vector_search([1.0, 0.0, 0.0, 0.0], ENG, 50)) == 2  # every visible row
    finance = SearchFilter(groups_any=frozenset({"finance", "nobody"}))
    assert ids(corpus.vector_search([1.0, 0.0, 0.0, 0.0], finance, 1)) == ["payroll"]


def test_no_groups_sees_nothing(corpus):
    nobody = SearchFilter(groups_any=frozenset())
    assert corpus.keyword_search("backup", nobody, 10) == []
    assert corpus.vector_search([1.0, 0.0, 0.0, 0.0], nobody, 10) == []


def test_group_names_cannot_inject_sql(corpus):
    evil = SearchFilter(groups_any=frozenset({"x']) OR true OR array_has_any(allowed_groups, ['y"}))
    assert corpus.vector_search([1.0, 0.0, 0.0, 0.0], evil, 10) == []


def test_tenants_are_isolated(corpus):
    assert "acme" not in ids(corpus.keyword_search("backup", ENG, 10))
    acme = SearchFilter(groups_any=frozenset({"eng"}), tenant="acme")
    assert ids(corpus.keyword_search("backup", acme, 10)) == ["acme"]
    assert ids(corpus.vector_search([1.0, 1.0, 0.0, 0.0], acme, 10)) == ["acme"]
    other = SearchFilter(groups_any=frozenset({"eng"}), tenant="o'brien")
    assert corpus.vector_search([1.0, 0.0, 0.0, 0.0], other, 10) == []


def test_collection_filter(corpus):
    pets = SearchFilter(groups_any=frozenset({"eng"}), collection="pets")
    assert ids(corpus.vector_search([1.0, 1.0, 0.0, 0.0], pets, 10)) == ["cats"]


def test_metadata_equality_filters(corpus):
    def find(metadata: dict[str, Any]) -> list[str]:
        return ids(
            corpus.vector_search(
                [1.0, 1.0, 0.0, 0.0], SearchFilter(groups_any=frozenset({"eng"}), metadata=metadata), 10
            )
        )

    assert find({"team": "infra"}) == ["backups"]
    assert find({"team": "infra", "year": 2024}) == ["backups"]
    assert find({"team": "infra", "year": 2023}) == []
    assert find({"team": "home"}) == ["cats"]
    assert find({"owner": "nobody"}) == []


def test_upsert_replaces_a_chunk_with_the_same_id(corpus):
    corpus.upsert(
        [
            item(
                chunk("backups", "Backups moved to weekly snapshots.", metadata={"team": "infra"}),
                [0.0, 0.0, 1.0, 0.0],
            )
        ]
    )
    assert corpus.keyword_search("night", ENG, 10) == []
    [replaced] = corpus.keyword_search("snapshots", ENG, 10)
    assert replaced.chunk.text == "Backups moved to weekly snapshots."
    assert ids(corpus.vector_search([0.0, 0.0, 1.0, 0.0], ENG, 1)) == ["backups"]
    assert len(corpus.vector_search([0.0, 0.0, 1.0, 0.0], ENG, 50)) == 2


def test_delete_by_document_and_by_version(index):
    index.upsert(
        [
            item(chunk("doc", "First version text.", version=1, ordinal=0), [1, 0, 0, 0]),
            item(chunk("doc", "First version more.", version=1, ordinal=1), [1, 0, 0, 0]),
            item(chunk("doc", "Second version text.", version=2, ordinal=0), [1, 0, 0, 0]),
            item(chunk("other", "Other document text.", version=1, ordinal=0), [1, 0, 0, 0]),
        ]
    )
    assert index.delete_document("doc", version=1) == 2
    assert sorted(r.chunk.chunk_id for r in index.keyword_search("text", ENG, 10)) == [
        "doc:v2:0",
        "other:v1:0",
    ]
    assert index.delete_document("doc") == 1
    assert index.delete_document("doc") == 0
    assert ids(index.keyword_search("text", ENG, 10)) == ["other"]


def test_a_second_connection_sees_new_writes(tmp_path, index):
    reader = LanceIndex(lancedb.connect(tmp_path), "chunks", dimension=DIM)  # default consistency: never
    index.upsert([item(BACKUPS, [1, 0, 0, 0])])
    assert ids(reader.keyword_search("backup", ENG, 10)) == ["backups"]
    index.upsert([item(CATS, [0, 1, 0, 0])])
    index.delete_document("backups")
    assert ids(reader.vector_search([1, 1, 0, 0], ENG, 10)) == ["cats"]


def test_a_reader_before_any_write_finds_nothing_and_creates_nothing(tmp_path):
    reader = LanceIndex(connect(tmp_path / "empty"), "chunks", dimension=DIM)
    assert reader.keyword_search("anything", ENG, 5) == []
    assert reader.vector_search([1, 0, 0, 0], ENG, 5) == []
    assert reader.delete_document("doc") == 0
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_rows_round_trip_to_chunks(corpus):
    [result] = corpus.keyword_search("database", ENG, 5)
    assert result.chunk == BACKUPS
    assert result.chunk.metadata == {"team": "infra", "year": 2024}


def test_ensure_index_is_idempotent(index):
    index.ensure_index()
    index.upsert([item(BACKUPS, [1, 0, 0, 0])])
    index.ensure_index()
    assert ids(index.keyword_search("backup", ENG, 5)) == ["backups"]


def test_factory_builds_the_lance_index_from_settings(tmp_path):
    from ragline.search.factory import search_index
    from ragline.settings import Settings

    settings = Settings(search_backend="lance", lance_path=str(tmp_path / "idx"), embedding_dimension=DIM)
    built = search_index(settings)
    assert isinstance(built, LanceIndex)
    built.ensure_index()
    built.upsert([item(BACKUPS, [1, 0, 0, 0])])
    assert ids(search_index(settings).keyword_search("backup", ENG, 5)) == ["backups"]
    with pytest.raises(ValueError, match="OPENSEARCH_ENDPOINT"):
        search_index(Settings(search_backend="opensearch", opensearch_endpoint=None))


def test_rows_are_searchable_before_and_after_they_are_folded_into_the_fts_index(tmp_path):
    idx = LanceIndex(connect(tmp_path), "chunks", dimension=DIM, optimize_after_rows=3)
    idx.ensure_index()
    table = connect(tmp_path).open_table("chunks")
    fts_index = next(i.name for i in table.list_indices() if i.columns == ["text"])
    words = ["turbine", "glacier", "lantern", "orchard"]
    for n, word in enumerate(words):
        idx.upsert([item(chunk(f"d{n}", f"A note about the {word}."), [1.0, 0.0, 0.0, float(n)])])
        # every row is found right after its write, whether or not the index has absorbed it yet
        hits = idx.keyword_search(word, ENG, k=5)
        assert [h.chunk.document_id for h in hits] == [f"d{n}"]
        unindexed = table.index_stats(fts_index).num_unindexed_rows
        assert unindexed == (n + 1) % 3, f"after write {n + 1}"
