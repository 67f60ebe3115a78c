import pytest

from functions.retrieve.domain.fusion import rrf
from ragline.contracts import Chunk
from ragline.search.port import ScoredChunk


def scored(ordinal: int, score: float = 1.0) -> ScoredChunk:
    chunk = Chunk(
        document_id="doc",
        version=1,
        ordinal=ordinal,
        collection="default",
        title="t",
        text=f"text {ordinal}",
        token_count=2,
        char_start=0,
        char_end=6,
        allowed_groups=["g"],
    )
    return ScoredChunk(chunk=chunk, score=score)


def ordinals(items: list[ScoredChunk]) -> list[int]:
    return [item.chunk.ordinal for item in items]


def test_single_list_keeps_its_order_with_rank_scores():
    fused = rrf([[scored(3, 9.0), scored(1, 5.0), scored(2, 0.1)]], k=60)
    assert ordinals(fused) == [3, 1, 2]
    assert [item.score for item in fused] == pytest.approx([1 / 61, 1 / 62, 1 / 63])


def test_chunks_in_both_lists_beat_chunks_in_one():
    keyword = [scored(1), scored(2), scored(3)]
    vector = [scored(4), scored(2), scored(5)]
    fused = rrf([keyword, vector], k=60)
    assert ordinals(fused)[0] == 2
    assert fused[0].score == pytest.approx(2 / 62)
    assert set(ordinals(fused)) == {1, 2, 3, 4, 5}


def test_ties_go_to_the_better_best_rank_then_first_seen():
    # 1 and 4 are both rank 1 once: equal scores, 1 was seen first (earlier list).
    fused = rrf([[scored(1), scored(2)], [scored(4), scored(3)]], k=60)
    assert ordinals(fused) == [1, 4, 2, 3]
    # Mirrored lists: equal scores and equal best ranks, so first appearance decides.
    fused = rrf([[scored(7), scored(8)], [scored(8), scored(7)]], k=10)
    assert ordinals(fused) == [7, 8]
    assert fused[0].score == pytest.approx(fused[1].score)


def test_weights_scale_each_list():
    keyword = [scored(1), scored(2)]
    vector = [scored(2), scored(1)]
    assert ordinals(rrf([keyword, vector], weights=[1.0, 3.0])) == [2, 1]
    assert ordinals(rrf([keyword, vector], weights=[3.0, 1.0])) == [1, 2]
    assert rrf([keyword, vector], weights=[0.5, 0.0])[0].score == pytest.approx(0.5 / 61)


def test_duplicates_within_a_list_count_once_at_their_best_rank():
    fused = rrf([[scored(1), scored(2), scored(1)]], k=60)
    assert ordinals(fused) == [1, 2]
    assert fused[0].score == pytest.approx(1 / 61)


def test_empty_inputs():
    assert rrf([]) == []
    assert rrf([[], []]) == []


def test_bad_arguments():
    with pytest.raises(ValueError):
        rrf([[scored(1)]], weights=[1.0, 2.0])
    with pytest.raises(ValueError):
        rrf([[scored(1)]], k=0)
