"""One version of each document per search response: `latest_versions` and the search use case around
it, on an in-memory index that returns what each test lays out (both versions active at once is the
moment of an update between activating the new version and deleting the old)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from functions.retrieve.domain.service import SearchService
from functions.retrieve.domain.versions import latest_versions, newest_versions
from ragline.contracts import Chunk, Principal, SearchMode, SearchRequest
from ragline.search.port import ScoredChunk, SearchFilter

ALICE = Principal(user_id="alice", groups=frozenset({"eng"}))


def scored(document_id: str, version: int, ordinal: int = 0, score: float = 1.0) -> ScoredChunk:
    chunk = Chunk(
        document_id=document_id,
        version=version,
        ordinal=ordinal,
        collection="default",
        title="Notes",
        text=f"{document_id} v{version} #{ordinal}",
        token_count=3,
        char_start=0,
        char_end=10,
        allowed_groups=["eng"],
    )
    return ScoredChunk(chunk=chunk, score=score)


def keys(items: Sequence[ScoredChunk]) -> list[str]:
    return [item.chunk.chunk_id for item in items]


def test_keeps_only_the_newest_version_of_each_document_in_order():
    ranked = [scored("a", 1, 0), scored("b", 3, 0), scored("a", 2, 0), scored("a", 1, 1), scored("a", 2, 1)]
    assert keys(latest_versions(ranked)) == ["b:v3:0", "a:v2:0", "a:v2:1"]


@pytest.mark.parametrize(
    "ranked",
    [
        [],
        [scored("a", 1, 0), scored("a", 1, 1)],
        [scored("a", 1), scored("b", 2), scored("c", 7)],  # versions of different documents never compete
    ],
)
def test_a_list_with_one_version_per_document_is_unchanged(ranked):
    assert latest_versions(ranked) == ranked


def test_the_newest_version_wins_even_when_it_ranks_lower():
    ranked = [scored("a", 4, 0), scored("a", 4, 1), scored("a", 5, 0)]
    assert keys(latest_versions(ranked)) == ["a:v5:0"]


def test_the_newest_version_can_come_from_another_list():
    keyword, vector = [scored("a", 1), scored("b", 1)], [scored("a", 2)]
    newest = newest_versions(keyword, vector)
    assert newest == {"a": 2, "b": 1}
    assert keys(latest_versions(keyword, newest)) == ["b:v1:0"]
    assert keys(latest_versions(vector, newest)) == ["a:v2:0"]


class ListedIndex:
    """Answers each search with the lists it was given, cut to k, and records the k asked for."""

    def __init__(self, keyword: list[ScoredChunk], vector: list[ScoredChunk] | None = None) -> None:
        self._keyword = keyword
        self._vector = vector if vector is not None else keyword
        self.asked: list[int] = []

    def keyword_search(self, query: str, flt: SearchFilter, k: int) -> list[ScoredChunk]:
        self.asked.append(k)
        return self._keyword[:k]

    def vector_search(self, vector: Sequence[float], flt: SearchFilter, k: int) -> list[ScoredChunk]:
        self.asked.append(k)
        return self._vector[:k]


class OneVector:
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]


def search(index: ListedIndex, **request) -> list[str]:
    response = SearchService(index, OneVector()).search(ALICE, SearchRequest(query="plan", **request))
    return [hit.chunk_id for hit in response.hits]


def test_a_response_never_mixes_versions_and_still_fills_top_k():
    # Both versions of "plan" are active; the old one's chunks rank first.
    ranked = [
        scored("plan", 1, 0, 9),
        scored("plan", 1, 1, 8),
        scored("plan", 2, 0, 7),
        scored("memo", 1, 0, 6),
        scored("plan", 1, 2, 5),
        scored("plan", 2, 1, 4),
        scored("note", 1, 0, 3),
    ]
    index = ListedIndex(ranked)
    assert search(index, mode=SearchMode.KEYWORD, top_k=4) == [
        "plan:v2:0",
        "memo:v1:0",
        "plan:v2:1",
        "note:v1:0",
    ]
    # The candidate depth (4 x top_k, at least 20) is what leaves room for the dropped chunks.
    assert index.asked == [20]


def test_hybrid_halves_that_each_found_another_version_give_the_newest():
    index = ListedIndex(
        keyword=[scored("plan", 1, 0, 9), scored("memo", 1, 0, 5)], vector=[scored("plan", 2, 0, 0.9)]
    )
    # each is first in one half: a tie, which goes to the keyword half's
    assert search(index, mode=SearchMode.HYBRID, top_k=5) == ["memo:v1:0", "plan:v2:0"]


def test_grouping_by_document_takes_the_best_chunk_of_the_newest_version():
    ranked = [scored("plan", 1, 0, 9), scored("plan", 2, 3, 8), scored("plan", 2, 0, 7)]
    assert search(ListedIndex(ranked), mode=SearchMode.KEYWORD, group_by="document") == ["plan:v2:3"]


def test_the_surviving_version_ranks_as_if_the_superseded_one_were_absent():
    keyword = [scored("plan", 1, 0, 9), scored("memo", 1, 0, 8), scored("plan", 2, 0, 7)]
    vector = [scored("plan", 1, 0, 0.9), scored("plan", 2, 0, 0.8), scored("memo", 1, 0, 0.7)]
    service = SearchService(ListedIndex(keyword, vector), OneVector())
    without = SearchService(
        ListedIndex([keyword[1], keyword[2]], [vector[1], vector[2]]),
        OneVector(),
    )
    request = SearchRequest(query="plan", mode=SearchMode.HYBRID, min_score=0.75)
    assert service.search(ALICE, request) == without.search(ALICE, request)
    assert {hit.chunk_id for hit in service.search(ALICE, request).hits} == {"plan:v2:0", "memo:v1:0"}
