"""Switching a document to a new version, as the update saga will: the index context's steps
(`IndexService.index_version`, `activate`, `delete_version`) on the real LanceDB index, and searches
through the retrieve context's use case between every two steps. Whatever the step, a search finds
the document at exactly one version: the old one until the new one is activated, the new one after."""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import lancedb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.index.domain.errors import (
    ChunksInvalid,
    ChunksNotFound,
    ReplacementNotVisible,
    VersionNotIndexed,
)
from functions.index.domain.service import ChunkFile, IndexService
from functions.retrieve.domain.service import SearchService
from ragline.contracts import Chunk, EventDetail, Principal, SearchMode, SearchRequest
from ragline.search.lance import LanceIndex
from ragline.search.port import SearchFilter

WORDS = ["blade", "bearing", "rotor", "housing", "shaft", "gearbox", "sensor", "valve"]
VOCABULARY = [*WORDS, "zephyr", "turbine", "check", "revised", "maintenance", "budget", "cats", "sleep"]
DIM = len(VOCABULARY)
ALICE = Principal(user_id="alice", groups=frozenset({"eng"}))
ENG = SearchFilter(groups_any=frozenset({"eng"}))


class WordEmbedder:
    """One dimension per word of a small vocabulary (others are ignored), normalised: a text that
    shares no word with the query has cosine 0, so the rankings in these tests are exact."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = []
        for text in texts:
            v = [0.0] * DIM
            for word in re.findall(r"[a-z]+", text.lower()):
                if word in VOCABULARY:
                    v[VOCABULARY.index(word)] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append([x / norm for x in v])
        return vectors


class ChunkFiles:
    """The parsed bucket's chunk files, in memory."""

    def __init__(self) -> None:
        self.files: dict[str, list[Chunk]] = {}

    def put(self, chunks: list[Chunk]) -> ChunkFile:
        first = chunks[0]
        key = f"parsed/{first.document_id}/v{first.version}/chunks.jsonl"
        self.files[key] = chunks
        return ChunkFile(first.document_id, first.version, key, len(chunks))

    def read(self, key: str) -> list[Chunk]:
        if key not in self.files:
            raise ChunksNotFound(key)
        return self.files[key]


class Published:
    def __init__(self) -> None:
        self.events: list[EventDetail] = []

    def publish(self, detail: EventDetail) -> None:
        self.events.append(detail)

    def publish_many(self, details: Sequence[EventDetail]) -> None:
        self.events.extend(details)


def chunks(document_id: str, version: int, texts: Sequence[str]) -> list[Chunk]:
    return [
        Chunk(
            document_id=document_id,
            version=version,
            ordinal=n,
            collection="default",
            title="Turbine manual",
            text=text,
            token_count=len(text.split()),
            char_start=0,
            char_end=len(text),
            allowed_groups=["eng"],
        )
        for n, text in enumerate(texts)
    ]


class Platform:
    """The index context's service writing, the retrieve context's service reading, one table."""

    def __init__(self, path: Path, *, optimize_after_rows: int = 2000) -> None:
        db = lancedb.connect(path, read_consistency_interval=timedelta(0))
        self.index = LanceIndex(db, "chunks", dimension=DIM, optimize_after_rows=optimize_after_rows)
        self.index.ensure_index()
        self.files = ChunkFiles()
        self.published = Published()
        self.service = IndexService(
            self.files, WordEmbedder(), self.index, self.published, dimension=DIM, batch_size=2
        )
        reader = LanceIndex(
            lancedb.connect(path, read_consistency_interval=timedelta(0)), "chunks", dimension=DIM
        )
        self.search_service = SearchService(reader, WordEmbedder())

    def versions(self, query: str, document_id: str, *, mode: SearchMode, top_k: int = 10) -> list[int]:
        """The versions of `document_id` among the hits, in hit order."""
        response = self.search_service.search(ALICE, SearchRequest(query=query, mode=mode, top_k=top_k))
        return [hit.version for hit in response.hits if hit.document_id == document_id]


@pytest.fixture
def platform(tmp_path) -> Platform:
    return Platform(tmp_path)


V1 = ["Turbine blades are inspected monthly.", "Turbine bearings are greased weekly."]
V2 = [
    "Turbine blades are inspected every week.",
    "Turbine bearings need no grease.",
    "Turbine logs go to ops.",
]


def test_index_version_writes_chunks_searches_do_not_see_and_publishes_nothing(platform):
    assert platform.service.index_version(platform.files.put(chunks("manual", 1, V1))) == 2
    assert platform.index.keyword_search("turbine", ENG, 10) == []
    assert platform.index.count("manual", 1, active=False) == 2
    assert platform.published.events == []

    assert platform.service.index_version(platform.files.put(chunks("manual", 1, V1))) == 2  # idempotent
    assert platform.index.count("manual") == 2


def test_index_version_can_write_a_version_active(platform):
    platform.service.index_version(platform.files.put(chunks("manual", 1, V1)), active=True)
    assert platform.versions("turbine blades", "manual", mode=SearchMode.KEYWORD) == [1, 1]


def test_index_version_reports_what_retrying_cannot_fix(platform):
    source = platform.files.put(chunks("manual", 2, V2))
    with pytest.raises(ChunksInvalid):
        platform.service.index_version(ChunkFile("manual", 2, source.chunks_key, 5))
    with pytest.raises(ChunksInvalid):
        platform.service.index_version(ChunkFile("manual", 3, source.chunks_key, 3))
    with pytest.raises(ChunksNotFound):
        platform.service.index_version(ChunkFile("manual", 2, "parsed/nothing", 3))
    assert platform.index.count("manual") == 0


def test_activate_makes_the_version_searchable_and_refuses_a_version_without_chunks(platform):
    platform.service.index_version(platform.files.put(chunks("manual", 2, V2)))
    assert platform.service.activate("manual", 2) == 3
    assert platform.service.activate("manual", 2) == 3  # idempotent
    assert platform.versions("turbine", "manual", mode=SearchMode.HYBRID) == [2, 2, 2]
    with pytest.raises(VersionNotIndexed):
        platform.service.activate("manual", 3)

    assert platform.service.deactivate("manual", 2) == 3
    assert platform.versions("turbine", "manual", mode=SearchMode.HYBRID) == []


def test_delete_version_waits_until_its_replacement_is_searchable(platform):
    platform.service.index_version(platform.files.put(chunks("manual", 1, V1)), active=True)
    platform.service.index_version(platform.files.put(chunks("manual", 2, V2)))

    for missing in (2, 3):  # written but not active; never written
        with pytest.raises(ReplacementNotVisible):
            platform.service.delete_version("manual", 1, replaced_by=missing)
    assert platform.versions("turbine", "manual", mode=SearchMode.KEYWORD) == [1, 1]

    platform.service.activate("manual", 2)
    assert platform.service.delete_version("manual", 1, replaced_by=2) == 2
    assert platform.service.delete_version("manual", 1, replaced_by=2) == 0  # idempotent
    assert platform.versions("turbine", "manual", mode=SearchMode.KEYWORD) == [2, 2, 2]

    assert platform.service.delete_version("manual", 2) == 3  # no replacement: the compensation's call
    platform.service.index_version(platform.files.put(chunks("manual", 2, V2)), active=True)
    assert platform.service.delete_document("manual") == 3
    assert platform.index.count("manual") == 0
    assert platform.published.events == []


# Other documents share words with both versions of the manual, but not the query's.
OTHERS = [
    chunks("memo", 1, ["Turbine maintenance budget: blade and rotor check, revised."]),
    chunks("cats", 1, ["Cats sleep most of the day."]),
]


@settings(max_examples=15, deadline=None)
@given(
    old=st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
    new=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5),
    mode=st.sampled_from(list(SearchMode)),
    top_k=st.integers(min_value=1, max_value=8),
    optimize_after_rows=st.sampled_from([1, 3, 1000]),
    fails_after_activation=st.booleans(),
)
def test_a_search_sees_exactly_one_version_at_every_step(
    old, new, mode, top_k, optimize_after_rows, fails_after_activation
):
    """v1 active → v2 written inactive → v2 activated → v1 deleted (or, when a later saga step fails,
    the compensation: v2 deleted). After each step a search for the document finds it, at one version."""
    with tempfile.TemporaryDirectory() as path:
        p = Platform(Path(path), optimize_after_rows=optimize_after_rows)
        for other in OTHERS:
            p.service.index_version(p.files.put(other), active=True)
        p.service.index_version(
            p.files.put(chunks("manual", 1, [f"Zephyr turbine {w} check." for w in old])), active=True
        )
        v2 = p.files.put(chunks("manual", 2, [f"Zephyr turbine {w} check, revised." for w in new]))

        def seen() -> set[int]:
            found = p.versions("zephyr", "manual", mode=mode, top_k=top_k)
            assert found, "the document dropped out of search"
            assert len(set(found)) == 1, f"one response mixed versions {found}"
            return set(found)

        assert seen() == {1}
        p.service.index_version(v2)
        assert seen() == {1}
        p.service.activate("manual", 2)
        assert seen() == {2}  # both versions are active now; the response keeps the newest
        if fails_after_activation:
            p.service.delete_version("manual", 2, replaced_by=1)
            assert seen() == {1}
            assert p.index.count("manual") == len(old)
        else:
            p.service.delete_version("manual", 1, replaced_by=2)
            assert seen() == {2}
            assert p.index.count("manual") == len(new)
