"""From ranked API hits to scores, with trec_eval's definitions (pytrec_eval), the ones BEIR reports."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

import pytrec_eval

from ragline.evaluation.beir import Qrels

Run = dict[str, dict[str, float]]  # query id → corpus id → score (higher is better)

# Our name → trec_eval's measure, as pytrec_eval reports it.
MEASURES = {
    "ndcg@10": "ndcg_cut_10",
    "recall@10": "recall_10",
    "recall@100": "recall_100",
    "mrr": "recip_rank",
}
_REQUESTED = {"ndcg_cut.10", "recall.10,100", "recip_rank"}


def ranking(document_ids: Iterable[str], corpus_id_of: Mapping[str, str]) -> dict[str, float]:
    """One query's run from the API's hits, best first.

    trec_eval ranks by score and breaks ties by document id, not by the order it was given; the API's
    scores are on each mode's own scale and may tie, so the score here is 1/rank: strictly decreasing,
    the API's order kept exactly. A document seen again (several of its chunks) keeps its first rank.
    A document that is not part of the corpus (someone else's, in the same collection) keeps its place
    as a non-relevant hit rather than letting the ones below it move up."""
    scores: dict[str, float] = {}
    for document_id in document_ids:
        corpus_id = corpus_id_of.get(document_id, f"not-in-corpus:{document_id}")
        if corpus_id not in scores:
            scores[corpus_id] = 1.0 / (len(scores) + 1)
    return scores


def random_run(query_ids: Iterable[str], corpus_ids: Sequence[str], depth: int = 100, seed: int = 0) -> Run:
    """The baseline any working search must beat: each query gets a seeded shuffle of the corpus."""
    rng = random.Random(seed)
    run = {}
    for query_id in query_ids:
        drawn = rng.sample(list(corpus_ids), min(depth, len(corpus_ids)))
        run[query_id] = {doc: 1.0 / rank for rank, doc in enumerate(drawn, start=1)}
    return run


def per_query(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """Every judged query's measures, under our names. pytrec_eval leaves out a query the run has no
    entry for; here it scores 0 on everything, so a search that answers nothing cannot look good."""
    evaluated = pytrec_eval.RelevanceEvaluator(qrels, _REQUESTED).evaluate(
        {qid: ranked for qid, ranked in run.items() if qid in qrels}
    )
    return {
        qid: {name: evaluated.get(qid, {}).get(measure, 0.0) for name, measure in MEASURES.items()}
        for qid in qrels
    }


def mean(qrels: Qrels, run: Run) -> dict[str, float]:
    """Each measure averaged over every judged query."""
    scores = per_query(qrels, run)
    return {name: sum(s[name] for s in scores.values()) / len(scores) for name in MEASURES} if scores else {}
