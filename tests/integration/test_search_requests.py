"""What a search request can ask for beyond a query: metadata filters on declared fields (and the
422s for filters the deployment cannot answer), grouping by document, the relevance gate and fusion
weights. Through the retrieve API handler, on a real LanceDB index with a bag-of-words embedder."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lancedb
import pytest

from functions.retrieve import wiring
from functions.retrieve.handlers import invoke
from ragline.contracts import ErrorResponse, SearchResponse
from ragline.search.fields import FilterableFields
from ragline.search.lance import LanceIndex
from ragline.search.port import IndexedChunk
from ragline.settings import Settings
from tests.integration.test_retrieve_handlers import (
    DIM,
    STAFF,
    FakeLambdaContext,
    HashedBagOfWords,
    call,
    chunk,
    rest_event,
)

FIELDS = {"year": "number", "published": "date", "team": "keyword", "draft": "boolean"}

REPORTS = [
    # (document, ordinal, text, metadata)
    ("r2021", 0, "Quarterly revenue report for the storage team.", {"year": 2021, "team": "storage"}),
    ("r2022", 0, "Quarterly revenue report for the network team.", {"year": 2022, "team": "network"}),
    (
        "r2023",
        0,
        "Quarterly revenue report for the storage team, draft.",
        {"year": 2023, "team": "storage", "draft": True, "published": "2023-06-30"},
    ),
    (
        "r2024",
        0,
        "Quarterly revenue report for the compute team.",
        {"year": 2024, "team": "compute", "published": "2024-01-15T09:30:00+02:00"},
    ),
    ("r2024", 1, "Revenue report appendix: quarterly revenue by region.", {"year": 2024, "team": "compute"}),
    ("untyped", 0, "Quarterly revenue report without a year.", {"year": "last year"}),
]


@pytest.fixture(autouse=True)
def service(tmp_path):
    embedder = HashedBagOfWords()
    index = LanceIndex(
        lancedb.connect(tmp_path, read_consistency_interval=timedelta(0)),
        "chunks",
        dimension=DIM,
        fields=FilterableFields(FIELDS),
    )
    index.ensure_index()
    chunks = [
        chunk(doc, text, ["staff"], ordinal=ordinal, metadata=metadata)
        for doc, ordinal, text, metadata in REPORTS
    ]
    index.upsert([IndexedChunk(c, embedder.embed([c.text])[0]) for c in chunks])
    settings = Settings(search_backend="lance", embedding_dimension=DIM, metadata_fields=FIELDS)
    wiring.override(wiring.build(settings, index=index, embedder=embedder))
    yield
    wiring.override(None)


def search(**body: Any) -> SearchResponse:
    status, payload = call(
        rest_event({"query": "quarterly revenue report", "top_k": 10} | body, claims=STAFF)
    )
    assert status == 200, payload
    return SearchResponse.model_validate(payload)


def documents(response: SearchResponse) -> set[str]:
    return {hit.document_id for hit in response.hits}


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"team": "storage"}, {"r2021", "r2023"}),
        ({"team": {"in": ["network", "compute"]}}, {"r2022", "r2024"}),
        ({"year": {"gte": 2022, "lt": 2024}}, {"r2022", "r2023"}),
        ({"year": {"gt": 2022}}, {"r2023", "r2024"}),
        ({"year": 2021}, {"r2021"}),
        ({"draft": True}, {"r2023"}),
        ({"published": {"gte": "2024-01-01"}}, {"r2024"}),
        # 09:30+02:00 is 07:30Z: instants compare, not strings
        ({"published": {"lt": "2024-01-15T08:00:00Z"}}, {"r2023", "r2024"}),
        ({"published": {"lt": "2024-01-15T07:00:00Z"}}, {"r2023"}),
        ({"team": "storage", "year": {"lte": 2021}}, {"r2021"}),
        ({"team": "nobody"}, set()),
    ],
)
def test_metadata_filters_select_documents_in_every_mode(mode, metadata, expected):
    response = search(mode=mode, metadata=metadata)
    assert documents(response) == expected
    assert response.no_answer is (not expected)


@pytest.mark.parametrize(
    ("metadata", "code", "field"),
    [
        ({"colour": "blue"}, "unknown_filter_field", "colour"),
        ({"year": "2021"}, "invalid_filter", "year"),
        ({"year": {"gte": "soon"}}, "invalid_filter", "year"),
        ({"team": {"gte": "a"}}, "invalid_filter", "team"),
        ({"published": {"gte": "not a date"}}, "invalid_filter", "published"),
        ({"draft": "yes"}, "invalid_filter", "draft"),
    ],
)
def test_filters_the_deployment_cannot_answer_are_422_with_a_code(metadata, code, field):
    status, body = call(rest_event({"query": "report", "metadata": metadata}, claims=STAFF))
    assert status == 422
    error = ErrorResponse.model_validate(body).error
    assert error.code == code
    assert field in error.message
    assert error.details[0]["loc"] == ["body", "metadata", field]


@pytest.mark.parametrize(
    "metadata",
    [
        {"year": {"gte": 1, "gt": 2}},
        {"year": {}},
        {"year": {"between": [1, 2]}},
        {"team": {"in": []}},
        {"year": {"gte": True}},
        {"bad-name": "x"},
    ],
)
def test_malformed_filters_are_422_validation_errors(metadata):
    status, body = call(rest_event({"query": "report", "metadata": metadata}, claims=STAFF))
    assert status == 422
    assert body["error"]["code"] == "validation_error"
    assert any("metadata" in detail["loc"] for detail in body["error"]["details"])


def test_invoke_reports_invalid_filters_as_a_typed_error():
    event = {
        "principal": {"user_id": "u", "groups": ["staff"]},
        "request": {"query": "report", "metadata": {"colour": "blue"}},
    }
    result = invoke.handler(event, FakeLambdaContext(function_name="ragline-retrieve-invoke"))
    assert ErrorResponse.model_validate(result).error.code == "unknown_filter_field"


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
def test_group_by_document_keeps_each_documents_best_chunk(mode):
    chunks = search(mode=mode, top_k=20, metadata={"team": "compute"}).hits
    assert [hit.document_id for hit in chunks] == ["r2024", "r2024"]
    grouped = search(mode=mode, top_k=20, metadata={"team": "compute"}, group_by="document").hits
    assert [(hit.document_id, hit.chunk_id) for hit in grouped] == [("r2024", chunks[0].chunk_id)]


def test_min_score_gates_on_the_best_cosine_similarity():
    best = search(mode="vector").hits[0].score
    assert search(mode="hybrid", min_score=best - 0.01).hits
    gated = search(mode="hybrid", min_score=best + 0.01)
    assert gated.hits == [] and gated.no_answer is True


def test_min_score_in_keyword_mode_reads_bm25():
    best = search(mode="keyword").hits[0].score
    assert search(mode="keyword", min_score=best).hits
    assert search(mode="keyword", min_score=best * 1.01).no_answer is True


def test_fusion_weights_steer_hybrid_towards_one_half():
    keyword = [hit.chunk_id for hit in search(mode="keyword").hits]
    vector = [hit.chunk_id for hit in search(mode="vector").hits]
    assert keyword != vector  # otherwise the weights could not show
    only_keyword = search(mode="hybrid", fusion={"keyword_weight": 1, "vector_weight": 0}).hits
    only_vector = search(mode="hybrid", fusion={"keyword_weight": 0, "vector_weight": 1}).hits
    assert [hit.chunk_id for hit in only_keyword] == keyword
    assert [hit.chunk_id for hit in only_vector] == vector


@pytest.mark.parametrize("method", ["rrf", "convex"])
def test_each_fusion_method_with_one_weight_at_zero_is_that_half_alone(method):
    keyword = [hit.chunk_id for hit in search(mode="keyword").hits]
    vector = [hit.chunk_id for hit in search(mode="vector").hits]
    fusion = {"method": method, "keyword_weight": 1, "vector_weight": 0}
    assert [hit.chunk_id for hit in search(mode="hybrid", fusion=fusion).hits] == keyword
    fusion = {"method": method, "keyword_weight": 0, "vector_weight": 1}
    assert [hit.chunk_id for hit in search(mode="hybrid", fusion=fusion).hits] == vector


def test_fusion_needs_a_weight():
    status, body = call(
        rest_event({"query": "q", "fusion": {"keyword_weight": 0, "vector_weight": 0}}, claims=STAFF)
    )
    assert status == 422 and body["error"]["code"] == "validation_error"
