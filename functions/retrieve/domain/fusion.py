"""Fusing ranked lists. Reciprocal rank fusion combines them by rank alone, so BM25 and cosine scores,
which live on different scales, never have to be compared (Cormack et al., 2009). A convex
combination of min-max normalised scores keeps how far ahead a hit is; with its weight tuned it
usually ranks better (Bruch et al., "An Analysis of Fusion Functions for Hybrid Retrieval", 2023)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ragline.search.port import ScoredChunk


def rrf(
    lists: Sequence[Sequence[ScoredChunk]], *, k: int = 60, weights: Sequence[float] | None = None
) -> list[ScoredChunk]:
    """Fused list, best first; each chunk's score is sum(weight / (k + rank)) over the lists it is in."""
    if k <= 0:
        raise ValueError("k must be positive")
    return _fuse(lists, weights, lambda ranked: lambda rank, item: 1.0 / (k + rank))


def convex(
    lists: Sequence[Sequence[ScoredChunk]], *, weights: Sequence[float] | None = None
) -> list[ScoredChunk]:
    """Fused list, best first; each chunk's score is the weighted mean of its min-max normalised
    score in each list (0 in a list it is missing from; 1 for every member of a list whose scores
    are all equal)."""

    def normalised(ranked: Sequence[ScoredChunk]) -> Callable[[int, ScoredChunk], float]:
        high = max((item.score for item in ranked), default=0.0)
        low = min((item.score for item in ranked), default=0.0)
        return lambda rank, item: (item.score - low) / (high - low) if high > low else 1.0

    weights = list(weights) if weights is not None else [1.0] * len(lists)
    total = sum(weights)
    if total <= 0:
        raise ValueError("weights must add up to more than 0")
    return _fuse(lists, [w / total for w in weights], normalised)


def _fuse(
    lists: Sequence[Sequence[ScoredChunk]],
    weights: Sequence[float] | None,
    contribution: Callable[[Sequence[ScoredChunk]], Callable[[int, ScoredChunk], float]],
) -> list[ScoredChunk]:
    """sum(weight * contribution) per chunk over the lists, best first.

    Chunks are keyed by chunk id; a chunk repeated within one list counts once, at its best rank. A
    list of weight 0 is left out altogether (ties included). Ties go to the chunk with the better
    best rank, then to the one seen first (earlier list, then earlier position): deterministic."""
    if weights is None:
        weights = [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError(f"{len(weights)} weights for {len(lists)} lists")

    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    first: dict[str, ScoredChunk] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        if weight == 0 or not ranked:
            continue
        score_of = contribution(ranked)
        seen: set[str] = set()
        for rank, item in enumerate(ranked, start=1):
            cid = item.chunk.chunk_id
            if cid in seen:
                continue
            seen.add(cid)
            scores[cid] = scores.get(cid, 0.0) + weight * score_of(rank, item)
            best_rank[cid] = min(best_rank.get(cid, rank), rank)
            first.setdefault(cid, item)

    order = {cid: position for position, cid in enumerate(first)}
    ranked_ids = sorted(scores, key=lambda cid: (-scores[cid], best_rank[cid], order[cid]))
    return [ScoredChunk(chunk=first[cid].chunk, score=scores[cid]) for cid in ranked_ids]
