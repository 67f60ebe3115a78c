import pytest

from functions.retrieve.domain.fusion import convex, rrf
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


# ------------------------------------------------------------------------------------- convex


def test_convex_normalises_each_list_to_its_own_range():
    # BM25 in the tens, cosine below 1: after normalisation each list's best is 1 and its worst 0.
    keyword = [scored(1, 30.0), scored(2, 20.0), scored(3, 10.0)]
    vector = [scored(3, 0.9), scored(4, 0.5)]
    fused = convex([keyword, vector], weights=[1.0, 1.0])
    by_ordinal = {item.chunk.ordinal: item.score for item in fused}
    assert by_ordinal == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5, 4: 0.0})
    # 1 and 3 tie at 0.5: 1 was ranked first in its list, 3 third in one and first in the other
    assert ordinals(fused) == [1, 3, 2, 4]


def test_convex_keeps_the_margin_rank_fusion_throws_away():
    # The vector list is nearly flat (0.61 vs 0.60), the keyword list decisive: convex follows the
    # keyword list's clear winner, rrf sees two first places and cannot tell them apart.
    keyword = [scored(1, 25.0), scored(2, 3.0), scored(3, 2.9)]
    vector = [scored(2, 0.61), scored(1, 0.60), scored(3, 0.10)]
    assert ordinals(convex([keyword, vector]))[0] == 1
    assert rrf([keyword, vector])[0].score == pytest.approx(rrf([keyword, vector])[1].score)


def test_convex_weights_pick_a_side():
    keyword = [scored(1, 9.0), scored(2, 1.0)]
    vector = [scored(2, 0.9), scored(1, 0.1)]
    assert ordinals(convex([keyword, vector], weights=[3.0, 1.0])) == [1, 2]
    assert ordinals(convex([keyword, vector], weights=[1.0, 3.0])) == [2, 1]


def test_convex_handles_flat_and_empty_lists_and_bad_weights():
    assert ordinals(convex([[scored(1, 5.0), scored(2, 5.0)], []])) == [1, 2]
    assert [item.score for item in convex([[scored(1, 5.0), scored(2, 5.0)]])] == [1.0, 1.0]
    with pytest.raises(ValueError):
        convex([[scored(1)], [scored(2)]], weights=[0.0, 0.0])
    with pytest.raises(ValueError):
        convex([[scored(1)]], weights=[1.0, 1.0])


@pytest.mark.parametrize("fuse", [rrf, convex])
def test_a_list_of_weight_zero_is_left_out(fuse):
    keyword = [scored(1, 3.0), scored(2, 3.0), scored(3, 1.0)]
    vector = [scored(4, 0.9), scored(2, 0.8)]
    assert ordinals(fuse([keyword, vector], weights=[1.0, 0.0])) == [1, 2, 3]
