"""The pure parts of bench/search.py: its figures, its synthetic data and its floor's correctness.
No timings are asserted here."""

import numpy as np
import pytest

from bench.search import (
    GROUPS,
    Floor,
    percentile,
    recall_at_k,
    summary,
    synthetic_corpus,
    synthetic_queries,
)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]  # 100 ... 1, unsorted on purpose
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_summary_is_in_milliseconds():
    row = summary([0.001, 0.002, 0.003])
    assert row == {"p50_ms": 2.0, "p99_ms": 3.0, "mean_ms": pytest.approx(2.0), "n": 3}


def test_recall_counts_the_exact_top_k_found():
    exact = [f"c{n}" for n in range(10)]
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(exact[:5] + ["x"] * 5, exact) == 0.5
    assert recall_at_k(list(reversed(exact)), exact) == 1.0  # order within the top k does not matter
    assert recall_at_k(["c0", "c1"], ["c0", "c1", "c2", "c3"], k=2) == 1.0
    assert recall_at_k(["c9"], [], k=10) == 1.0  # nothing visible: nothing to miss


def test_the_corpus_is_deterministic_from_its_seed():
    first, again, other = (
        synthetic_corpus(300, seed=3),
        synthetic_corpus(300, seed=3),
        synthetic_corpus(300, seed=4),
    )
    assert first.texts == again.texts and first.titles == again.titles and first.headings == again.headings
    assert np.array_equal(first.vectors, again.vectors) and np.array_equal(first.groups, again.groups)
    assert first.texts != other.texts
    queries = synthetic_queries(first, 20, seed=5)
    repeated = synthetic_queries(again, 20, seed=5)
    assert [q.text for q in queries] == [q.text for q in repeated]
    assert all(np.array_equal(q.vector, r.vector) for q, r in zip(queries, repeated, strict=True))


def test_the_corpus_has_the_promised_shape():
    corpus = synthetic_corpus(2000, seed=3)
    assert corpus.vectors.shape == (2000, 384) and corpus.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(corpus.vectors, axis=1), 1.0, atol=1e-5)
    assert all(50 <= len(text.split()) <= 150 for text in corpus.texts)
    shares = np.bincount(corpus.groups, minlength=len(GROUPS)) / len(corpus)
    assert shares.min() > 0.04 and shares.max() < 0.2  # about 10% each (200 documents)
    chunk = corpus.chunks()[0]
    assert chunk.allowed_groups == [GROUPS[corpus.groups[0]]]
    assert chunk.heading_path == [corpus.titles[0], corpus.headings[0]]
    # Clustered, not uniform: chunks of one topic are much closer than chunks of different topics.
    same = corpus.topics[:, None] == corpus.topics[None, :200]
    cosines = corpus.vectors @ corpus.vectors[:200].T
    assert cosines[same].mean() > cosines[~same].mean() + 0.3
    for query in synthetic_queries(corpus, 20):
        assert 2 <= len(query.text.split()) <= 4
        assert abs(float(np.linalg.norm(query.vector)) - 1.0) < 1e-5


def test_the_floor_returns_only_the_callers_chunks_and_exact_neighbours():
    corpus = synthetic_corpus(1000, seed=3)
    floor = Floor(corpus)
    found = 0
    for query in synthetic_queries(corpus, 10):
        group = GROUPS[query.group]
        keyword, vector = floor.keyword(query), floor.vector(query, k=10)
        words = set(query.text.split())
        matching = {
            chunk.chunk_id
            for chunk in corpus.chunks()
            if chunk.allowed_groups == [group]
            and words & set(" ".join([chunk.text, chunk.title, *chunk.heading_path]).split())
        }
        assert {item.chunk.chunk_id for item in keyword} <= matching
        assert len(keyword) == min(40, len(matching))
        found += len(keyword)
        assert [item.score for item in keyword] == sorted((item.score for item in keyword), reverse=True)
        visible = np.flatnonzero(corpus.groups == query.group)
        exact = visible[np.argsort(-(corpus.vectors[visible] @ query.vector))[:10]]
        assert [item.chunk.chunk_id for item in vector] == [corpus.chunks()[n].chunk_id for n in exact]
        assert len(floor.hybrid(query)) == 10
    assert found  # the queries do match something
