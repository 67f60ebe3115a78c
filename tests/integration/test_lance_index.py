"""The LanceDB adapter on a real table in a temporary directory, with hand-made 4-d vectors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lancedb
import pyarrow as pa
import pytest

from ragline.contracts import Chunk, InFilter, MetadataFilter, RangeFilter
from ragline.search.fields import FilterableFields, MatchAny
from ragline.search.lance import LanceIndex, schema
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


def test_a_write_folds_in_every_writers_flat_rows_once_they_reach_a_tenth_of_the_table(tmp_path):
    def writer() -> LanceIndex:
        return LanceIndex(
            connect(tmp_path), "chunks", dimension=DIM, optimize_min_rows=4, optimize_after_rows=10
        )

    first, second = writer(), writer()
    first.ensure_index()
    table = connect(tmp_path).open_table("chunks")
    fts_index = next(i.name for i in table.list_indices() if i.columns == ["text"])
    rows = (item(chunk(f"d{n}", f"Note {n}."), [1.0, 0.0, 0.0, float(n)]) for n in range(1000))

    def write(idx: LanceIndex, count: int) -> int:
        idx.upsert([next(rows) for _ in range(count)])
        return table.index_stats(fts_index).num_unindexed_rows

    assert write(first, 3) == 3  # below the floor of 4
    assert write(second, 1) == 0  # 4 flat rows, 3 of them written by the other writer
    assert write(first, 60) == 0
    assert write(second, 6) == 6  # 6 of 70 rows: below a tenth
    assert write(first, 1) == 0  # 7 of 71
    assert write(second, 100) == 0
    assert [write(first, 1) for _ in range(10)] == [*range(1, 10), 0]  # a tenth is 18: the cap of 10


# ------------------------------------------------------------------------------ typed filters

FIELDS = FilterableFields(
    {"team": "keyword", "year": "number", "published": "date", "draft": "boolean", "owner's team": "keyword"}
)
ANY = [1.0, 1.0, 1.0, 1.0]  # close to every vector below: the filter alone decides what comes back


def meta(document_id: str, metadata: dict[str, Any], **overrides: Any) -> IndexedChunk:
    return item(chunk(document_id, f"Release notes for {document_id}.", metadata=metadata, **overrides), ANY)


FILTERED = [
    meta("a", {"team": "infra", "year": 2023, "published": "2024-01-01", "draft": False}),
    # 23:30 on 1 January at -02:00 is 01:30 on 2 January UTC
    meta("b", {"team": "home", "year": 2024, "published": "2024-01-01T23:30:00-02:00", "draft": True}),
    meta(
        "c", {"team": "infra", "year": 2024.5, "published": "2024-03-15T12:00:00Z", "owner's team": "o'brien"}
    ),
    meta("bare", {}),
    meta("wrong-types", {"team": 7, "year": "2024", "published": "soon", "draft": "yes"}),
    meta("finance", {"team": "infra", "year": 2024}, allowed_groups=["finance"]),
    meta("acme", {"team": "infra", "year": 2024}, tenant="acme"),
]


@pytest.fixture
def filtered(tmp_path) -> LanceIndex:
    idx = LanceIndex(connect(tmp_path), "chunks", dimension=DIM, fields=FIELDS)
    idx.ensure_index()
    idx.upsert(FILTERED)
    return idx


def found(idx: LanceIndex, filters: dict[str, MetadataFilter], **scope: Any) -> list[str]:
    """Document ids both searches return under `filters` (they must agree), sorted."""
    scope.setdefault("groups_any", frozenset({"eng"}))
    flt = SearchFilter(conditions=FIELDS.conditions(filters), **scope)
    by_vector = sorted(ids(idx.vector_search(ANY, flt, 50)))
    by_keyword = sorted(ids(idx.keyword_search("release notes", flt, 50)))
    assert by_vector == by_keyword
    return by_vector


def test_keyword_equality_and_in(filtered):
    assert found(filtered, {"team": "infra"}) == ["a", "c"]
    assert found(filtered, {"team": InFilter(in_=["infra", "home"])}) == ["a", "b", "c"]
    assert found(filtered, {"team": "Infra"}) == []  # keywords are exact, like OpenSearch's keyword type
    assert found(filtered, {"owner's team": "o'brien"}) == ["c"]


def test_number_equality_in_and_ranges(filtered):
    assert found(filtered, {"year": 2024}) == ["b"]
    assert found(filtered, {"year": 2024.0}) == ["b"]
    assert found(filtered, {"year": InFilter(in_=[2023, 2024.5])}) == ["a", "c"]
    assert found(filtered, {"year": RangeFilter(gte=2024)}) == ["b", "c"]
    assert found(filtered, {"year": RangeFilter(gt=2024)}) == ["c"]
    assert found(filtered, {"year": RangeFilter(lt=2024)}) == ["a"]
    assert found(filtered, {"year": RangeFilter(lte=2024)}) == ["a", "b"]
    assert found(filtered, {"year": RangeFilter(gt=2023, lt=2024.5)}) == ["b"]
    # numbers compare as numbers, not text: "2023" > "10000" as strings
    assert found(filtered, {"year": RangeFilter(lt=10_000)}) == ["a", "b", "c"]


def test_date_ranges_compare_instants(filtered):
    # a date-only bound is midnight UTC; gte includes a chunk at exactly that instant, gt excludes it
    assert found(filtered, {"published": RangeFilter(gte="2024-01-01")}) == ["a", "b", "c"]
    assert found(filtered, {"published": RangeFilter(gt="2024-01-01")}) == ["b", "c"]
    # b was published on 1 January in its own offset, but on 2 January UTC
    assert found(filtered, {"published": RangeFilter(lt="2024-01-02")}) == ["a"]
    assert found(filtered, {"published": RangeFilter(lte="2024-01-02T01:30:00Z")}) == ["a", "b"]
    assert found(filtered, {"published": RangeFilter(lt="2024-01-01T21:30:00-04:00")}) == ["a"]
    assert found(filtered, {"published": RangeFilter(lte="2024-01-01T21:30:00-04:00")}) == ["a", "b"]
    assert found(filtered, {"published": RangeFilter(gt="2024-01-02T01:30:00+00:00", lte="2024-12-31")}) == [
        "c"
    ]
    assert found(filtered, {"published": "2024-01-02T01:30:00Z"}) == ["b"]
    assert found(filtered, {"published": "2024-01-01T23:30:00-02:00"}) == ["b"]


def test_boolean_equality(filtered):
    assert found(filtered, {"draft": True}) == ["b"]
    assert found(filtered, {"draft": False}) == ["a"]
    assert found(filtered, {"draft": InFilter(in_=[True, False])}) == ["a", "b"]


def test_conditions_combine_with_each_other_acl_and_tenant(filtered):
    assert found(filtered, {"team": "infra", "year": RangeFilter(gte=2024)}) == ["c"]
    assert found(filtered, {"team": "infra", "draft": True}) == []
    assert found(filtered, {"team": "infra"}, tenant="acme") == ["acme"]
    assert found(filtered, {"team": "infra"}, groups_any=frozenset({"finance"})) == ["finance"]
    assert found(filtered, {"team": "infra"}, collection="pets") == []


def test_chunks_lacking_a_field_or_holding_another_type_never_match(filtered):
    # "bare" has no metadata; "wrong-types" has team 7, year "2024", published "soon", draft "yes"
    assert found(filtered, {"team": InFilter(in_=["7", "infra", "home"])}) == ["a", "b", "c"]
    assert found(filtered, {"year": 2024}) == ["b"]
    assert found(filtered, {"year": RangeFilter(gte=-1e300)}) == ["a", "b", "c"]
    assert found(filtered, {"published": RangeFilter(gte="1970-01-01")}) == ["a", "b", "c"]
    assert found(filtered, {"draft": InFilter(in_=[True, False])}) == ["a", "b"]


@pytest.mark.parametrize(
    "value",
    [
        "x') OR TRUE OR ('",
        "infra' OR '1'='1",
        "infra\\' OR TRUE --",
        "') OR f_keyword_team IS NULL OR ('",
        "infra\x00' OR TRUE",
    ],
)
def test_filter_values_cannot_inject_sql(filtered, value):
    assert found(filtered, {"team": value}) == []
    assert found(filtered, {"team": InFilter(in_=["infra", value])}) == ["a", "c"]
    assert found(filtered, {"team": "infra"}, tenant=value) == []
    assert found(filtered, {"team": "infra"}, collection=value) == []


def test_conditions_on_a_field_the_table_has_no_column_for_match_nothing(filtered):
    # a caller whose settings declare a field the table was never evolved for: no error, no match
    flt = SearchFilter(groups_any=frozenset({"eng"}), conditions=(MatchAny("region", "keyword", ("eu",)),))
    assert filtered.vector_search(ANY, flt, 10) == []


# ------------------------------------------------------------------------------ relevance


def test_title_and_heading_boosts_change_the_ranking(tmp_path):
    db = connect(tmp_path)
    writer = LanceIndex(db, "chunks", dimension=DIM)
    writer.ensure_index()
    writer.upsert(
        [
            item(chunk("in-title", "General notes about the plant.", title="Turbine maintenance"), ANY),
            item(chunk("in-heading", "General notes about the plant.", heading_path=["Turbine checks"]), ANY),
            item(chunk("in-text", "The turbine is inspected weekly."), ANY),
        ]
    )

    def ranking(title_boost: float, heading_boost: float) -> list[tuple[str, float]]:
        idx = LanceIndex(db, "chunks", dimension=DIM, title_boost=title_boost, heading_boost=heading_boost)
        return [(r.chunk.document_id, r.score) for r in idx.keyword_search("turbine", ENG, 10)]

    assert {doc for doc, _ in ranking(2.0, 1.0)} == {"in-title", "in-heading", "in-text"}
    assert ranking(20.0, 1.0)[0][0] == "in-title"
    assert ranking(1.0, 20.0)[0][0] == "in-heading"
    # the best field's score, times its boost (OpenSearch's best_fields multi_match)
    assert dict(ranking(4.0, 1.0))["in-title"] == pytest.approx(2 * dict(ranking(2.0, 1.0))["in-title"])
    # a boost of 0 leaves the field out of the query altogether
    assert {doc for doc, _ in ranking(0.0, 1.0)} == {"in-heading", "in-text"}
    assert {doc for doc, _ in ranking(2.0, 0.0)} == {"in-title", "in-text"}
    assert [doc for doc, _ in ranking(0.0, 0.0)] == ["in-text"]


def test_english_analysis_stems_folds_and_drops_stop_words(index):
    index.upsert(
        [
            item(chunk("runs", "The backup job runs nightly."), ANY),
            item(chunk("cafe", "Meet at the Café downstairs."), ANY),
            item(chunk("heading", "Nothing here.", heading_path=["Deployments", "Rolling restarts"]), ANY),
        ]
    )
    assert ids(index.keyword_search("running", ENG, 10)) == ["runs"]
    assert ids(index.keyword_search("CAFE", ENG, 10)) == ["cafe"]
    assert ids(index.keyword_search("restart", ENG, 10)) == ["heading"]
    assert index.keyword_search("the and of to", ENG, 10) == []


# ------------------------------------------------------------------------------ evolution


def test_an_old_table_gains_a_newly_declared_field_and_reindex_fills_it(tmp_path):
    db = connect(tmp_path)
    old = LanceIndex(db, "chunks", dimension=DIM)
    old.ensure_index()
    old.upsert([meta("a", {"year": 2023}), meta("b", {"year": 2024}), meta("c", {})])
    fields = FilterableFields({"year": "number"})
    recent = SearchFilter(
        groups_any=frozenset({"eng"}), conditions=fields.conditions({"year": RangeFilter(gte=2024)})
    )

    new = LanceIndex(db, "chunks", dimension=DIM, fields=fields)
    assert new.vector_search(ANY, recent, 10) == []  # no column yet: matches nothing, fails nothing
    new.ensure_index()
    assert new.vector_search(ANY, recent, 10) == []  # the column exists, rows written before are null
    new.upsert([meta("d", {"year": 2025})])
    assert ids(new.vector_search(ANY, recent, 10)) == ["d"]  # new writes carry the field at once

    messages: list[str] = []
    report = new.reindex(progress=messages.append)
    assert report["rows"] == 4 and report["rows_updated"] == 4
    assert report["typed_columns"] == ["f_number_year"]
    assert {"text", "title", "heading_path", "allowed_groups"} <= set(report["indexes_rebuilt"])
    assert messages
    assert sorted(ids(new.vector_search(ANY, recent, 10))) == ["b", "d"]
    assert sorted(ids(new.keyword_search("release", recent, 10))) == ["b", "d"]
    assert new.keyword_search("notes", ENG, 10)  # the rebuilt FTS indexes still answer


def test_reindex_after_a_field_changes_type_drops_the_old_column(tmp_path):
    db = connect(tmp_path)
    as_number = LanceIndex(db, "chunks", dimension=DIM, fields=FilterableFields({"year": "number"}))
    as_number.upsert([meta("a", {"year": 2024}), meta("b", {"year": "2024"})])
    keyword = FilterableFields({"year": "keyword"})
    as_keyword = LanceIndex(db, "chunks", dimension=DIM, fields=keyword)
    report = as_keyword.reindex()
    assert report["columns_dropped"] == ["f_number_year"]
    flt = SearchFilter(groups_any=frozenset({"eng"}), conditions=keyword.conditions({"year": "2024"}))
    assert ids(as_keyword.vector_search(ANY, flt, 10)) == ["b"]  # a string now; the number 2024 is not one


def test_a_table_with_the_legacy_metadata_kv_column_keeps_working(tmp_path):
    db = connect(tmp_path)
    legacy = pa.schema([*schema(DIM), pa.field("metadata_kv", pa.list_(pa.string()))])
    table = db.create_table("chunks", schema=legacy)
    row = LanceIndex(db, "chunks", dimension=DIM)._row(meta("old", {"team": "infra"})) | {
        "metadata_kv": ['["team", "infra"]']
    }
    table.add(pa.Table.from_pylist([row], schema=legacy))

    fields = FilterableFields({"team": "keyword"})
    idx = LanceIndex(db, "chunks", dimension=DIM, fields=fields)
    idx.ensure_index()
    idx.upsert([meta("new", {"team": "infra"})])
    infra = SearchFilter(groups_any=frozenset({"eng"}), conditions=fields.conditions({"team": "infra"}))
    assert ids(idx.vector_search(ANY, infra, 10)) == ["new"]
    assert idx.reindex()["rows"] == 2
    assert sorted(ids(idx.keyword_search("release", infra, 10))) == ["new", "old"]
    assert idx.delete_document("old") == 1


# ------------------------------------------------------------------------------ visibility


@pytest.mark.parametrize("optimize_after_rows", [1, 1000])
def test_a_change_of_allowed_groups_is_visible_to_the_very_next_search(tmp_path, optimize_after_rows):
    """Re-permissioning writes a new version with the new groups and deletes the old one; whether or
    not the old version had been folded into the indexes, the next search must not return it."""
    idx = LanceIndex(connect(tmp_path), "chunks", dimension=DIM, optimize_after_rows=optimize_after_rows)
    idx.ensure_index()
    finance = SearchFilter(groups_any=frozenset({"finance"}))
    idx.upsert([item(chunk("plan", "The merger plan.", version=1), [1, 0, 0, 0])])
    assert ids(idx.keyword_search("merger", ENG, 10)) == ["plan"]

    idx.upsert([item(chunk("plan", "The merger plan.", version=2, allowed_groups=["finance"]), [1, 0, 0, 0])])
    assert idx.delete_document("plan", version=1) == 1
    assert idx.keyword_search("merger", ENG, 10) == []
    assert idx.vector_search([1, 0, 0, 0], ENG, 10) == []
    assert [r.chunk.chunk_id for r in idx.keyword_search("merger", finance, 10)] == ["plan:v2:0"]
    assert [r.chunk.chunk_id for r in idx.vector_search([1, 0, 0, 0], finance, 10)] == ["plan:v2:0"]


def test_vector_search_is_exact_for_indexed_rows_and_rows_written_since(tmp_path):
    idx = LanceIndex(connect(tmp_path), "chunks", dimension=DIM, optimize_after_rows=3)
    idx.ensure_index()
    vectors = [
        [1, 0, 0, 0],
        [0.9, 0.1, 0, 0],
        [0, 1, 0, 0],
        [0.5, 0.5, 0.5, 0],
        [0, 0, 1, 1],
        [-1, 0, 0, 0],
        [0.7, 0, 0.7, 0],
    ]
    items = [item(chunk(f"d{n}", "Text."), [float(x) for x in v]) for n, v in enumerate(vectors)]
    idx.upsert(items[:3])
    idx.upsert(items[3:6])  # both batches folded into the vector index by optimize()
    idx.upsert(items[6:])  # searched flat
    table = connect(tmp_path).open_table("chunks")
    stats = table.index_stats(next(i.name for i in table.list_indices() if i.columns == ["vector"]))
    assert (stats.num_indexed_rows, stats.num_unindexed_rows) == (6, 1)

    query = [0.8, 0.2, 0.3, 0.1]

    def cosine(v: list[float]) -> float:
        dot = sum(a * b for a, b in zip(query, v, strict=True))
        return dot / (sum(a * a for a in query) ** 0.5 * sum(b * b for b in v) ** 0.5)

    expected = sorted(((f"d{n}", cosine(v)) for n, v in enumerate(vectors)), key=lambda pair: -pair[1])
    results = idx.vector_search(query, ENG, 10)
    assert ids(results) == [doc for doc, _ in expected]
    assert [r.score for r in results] == pytest.approx([score for _, score in expected], abs=1e-5)

    assert idx.delete_document("d0") == 1  # an indexed row: masked at once
    assert ids(idx.vector_search(query, ENG, 10)) == [doc for doc, _ in expected if doc != "d0"]


# ------------------------------------------------------------------------------ the active flag


def versions_found(idx: LanceIndex, query: str, vector: list[float]) -> tuple[set[int], set[int]]:
    """The versions of "plan" that keyword and vector search return, with k well above the rows."""
    by_keyword = {
        r.chunk.version for r in idx.keyword_search(query, ENG, 50) if r.chunk.document_id == "plan"
    }
    by_vector = {r.chunk.version for r in idx.vector_search(vector, ENG, 50) if r.chunk.document_id == "plan"}
    return by_keyword, by_vector


@pytest.mark.parametrize("optimize_after_rows", [1, 1000])
def test_inactive_chunks_are_invisible_until_activated(tmp_path, optimize_after_rows):
    idx = LanceIndex(connect(tmp_path), "chunks", dimension=DIM, optimize_after_rows=optimize_after_rows)
    idx.ensure_index()
    old = [item(chunk("plan", "The merger plan, first draft.", version=1, ordinal=n), ANY) for n in range(2)]
    new = [
        IndexedChunk(
            chunk("plan", "The merger plan, final.", version=2, ordinal=n), [1, 0, 0, 0], active=False
        )
        for n in range(3)
    ]
    idx.upsert([*old, item(CATS, [0, 1, 0, 0])])
    idx.upsert(new)

    # The new version is the better match for both searches, and k leaves room: a post-filter would show it.
    assert versions_found(idx, "merger plan final", [1, 0, 0, 0]) == ({1}, {1})
    assert (idx.count("plan", 1, active=True), idx.count("plan", 2, active=False)) == (2, 3)
    assert (idx.count("plan", 2, active=True), idx.count("plan"), idx.count("plan", 2)) == (0, 5, 3)

    assert idx.set_active("plan", 2, True) == 3
    assert versions_found(idx, "merger plan final", [1, 0, 0, 0]) == ({1, 2}, {1, 2})
    assert idx.count("plan", 2, active=True) == 3

    assert idx.set_active("plan", 1, False) == 2
    assert versions_found(idx, "merger plan", [1, 0, 0, 0]) == ({2}, {2})
    assert idx.set_active("plan", 1, False) == 2  # idempotent
    assert ids(idx.keyword_search("cats", ENG, 10)) == ["cats"]  # other documents untouched

    assert idx.set_active("plan", 7, True) == 0  # no such version
    assert idx.set_active("nothing", 1, True) == 0
    assert idx.delete_document("plan", 1) == 2  # inactive chunks are deleted like any others
    assert idx.count("plan") == 3


def test_activation_is_seen_by_another_connection(tmp_path, index):
    reader = LanceIndex(connect(tmp_path), "chunks", dimension=DIM)
    index.upsert([IndexedChunk(BACKUPS, [1, 0, 0, 0], active=False)])
    assert reader.keyword_search("backup", ENG, 10) == []
    index.set_active("backups", 1, True)
    assert ids(reader.keyword_search("backup", ENG, 10)) == ["backups"]
    assert ids(reader.vector_search([1, 0, 0, 0], ENG, 10)) == ["backups"]


def test_re_upserting_a_chunk_sets_its_flag_as_written(index):
    index.upsert([IndexedChunk(BACKUPS, [1, 0, 0, 0], active=False)])
    index.upsert([item(BACKUPS, [1, 0, 0, 0])])
    assert ids(index.keyword_search("backup", ENG, 10)) == ["backups"]


def test_a_table_from_before_the_active_column_gains_it_with_every_row_active(tmp_path):
    db = connect(tmp_path)
    before = pa.schema([f for f in schema(DIM) if f.name != "active"])
    table = db.create_table("chunks", schema=before)
    rows = [LanceIndex(db, "chunks", dimension=DIM)._row(item(c, ANY)) for c in (BACKUPS, CATS)]
    table.add(
        pa.Table.from_pylist([{k: v for k, v in r.items() if k != "active"} for r in rows], schema=before)
    )

    reader = LanceIndex(db, "chunks", dimension=DIM)  # never evolves the table: every row is active
    assert sorted(ids(reader.vector_search(ANY, ENG, 10))) == ["backups", "cats"]
    assert (reader.count("cats", active=True), reader.count("cats", active=False)) == (1, 0)

    writer = LanceIndex(db, "chunks", dimension=DIM)
    writer.ensure_index()
    evolved = db.open_table("chunks")
    assert evolved.schema.field("active").type == pa.bool_()
    assert not evolved.schema.field("active").nullable
    assert any(i.columns == ["active"] for i in evolved.list_indices())
    assert sorted(ids(reader.vector_search(ANY, ENG, 10))) == ["backups", "cats"]
    assert ids(reader.keyword_search("database", ENG, 10)) == ["backups"]
    assert writer.set_active("cats", 1, False) == 1
    assert ids(reader.vector_search(ANY, ENG, 10)) == ["backups"]
    assert writer.reindex()["rows"] == 2  # the flag survives a rebuild
    assert ids(reader.vector_search(ANY, ENG, 10)) == ["backups"]
