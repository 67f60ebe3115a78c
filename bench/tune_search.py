"""Sweep query-time search settings on an index `ragline eval beir` already built, without re-ingesting.

    .venv/bin/python -m bench.tune_search --state-dir /tmp/scifact --embedding-url http://127.0.0.1:8081 \
        --title-boost 1,2,3 --heading-boost 0,1 --rrf-k 20,60

Opens the local platform's LanceDB table under `<state-dir>/index` read-only, runs every dev query
through the real search service (LanceIndex with each combination of boosts, the query embedded once
by the platform's embedding server), and scores nDCG@10 / recall / MRR with pytrec_eval for each
combination, on all queries and on the two halves of the query list (odd and even positions): a
setting whose gain is real shows on both halves, one fitted to noise on one. Only the dev queries may be
used for tuning; the held-out test claims check that it generalises.
"""

from __future__ import annotations

import argparse
import itertools
import json
from datetime import timedelta
from pathlib import Path

import httpx

from functions.retrieve.domain.service import SearchService
from ragline.contracts import FusionParams, Principal, SearchRequest
from ragline.endpoints.embedding import EmbeddingClient, HttpEmbeddingTransport
from ragline.evaluation import metrics
from ragline.evaluation.beir import load
from ragline.search.lance import LanceIndex

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact-dev"
TABLE = "ragline-chunks"


class CachedEmbedder:
    """Each query embedded once, by the platform's own embedding server through the platform's client."""

    def __init__(self, url: str) -> None:
        self._client = EmbeddingClient(
            HttpEmbeddingTransport(httpx.Client(timeout=60), url), truncate=True, dimension=384
        )
        self._cache: dict[str, list[float]] = {}

    def embed(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, self._client.embed(missing), strict=True))
        return [self._cache[t] for t in texts]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--embedding-url", required=True)
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--collection", default=None, help="default: beir-<dataset folder>")
    parser.add_argument("--group", default="beir-eval")
    parser.add_argument("--modes", default="keyword,vector,hybrid")
    parser.add_argument("--title-boost", type=floats, default=[2.0])
    parser.add_argument("--heading-boost", type=floats, default=[1.0])
    parser.add_argument("--rrf-k", type=floats, default=[60.0])
    parser.add_argument("--keyword-weight", type=floats, default=[1.0])
    parser.add_argument("--method", default="rrf", help="comma-separated: rrf,convex")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import lancedb

    dataset = load(args.dataset, args.split)
    collection = args.collection or f"beir-{dataset.name.lower()}"
    db = lancedb.connect(str(args.state_dir / "index"), read_consistency_interval=timedelta(0))
    rows = (
        db.open_table(TABLE)
        .search()
        .where(f"collection = '{collection}'")
        .select(["document_id", "metadata"])
        .limit(None)
        .to_list()
    )
    corpus_id_of = {row["document_id"]: json.loads(row["metadata"])["beir_id"] for row in rows}
    print(f"{len(corpus_id_of)} documents of {collection}; {len(dataset.queries)} queries")

    embedder = CachedEmbedder(args.embedding_url)
    principal = Principal(user_id="tune", groups=frozenset({args.group}))
    query_ids = list(dataset.queries)
    halves = {"odd": set(query_ids[0::2]), "even": set(query_ids[1::2])}
    results = []
    for title, heading, method, k, weight in itertools.product(
        args.title_boost, args.heading_boost, args.method.split(","), args.rrf_k, args.keyword_weight
    ):
        index = LanceIndex(db, TABLE, dimension=384, title_boost=title, heading_boost=heading)
        fusion = FusionParams(method=method, k=int(k), keyword_weight=weight)
        service = SearchService(index, embedder, fusion=fusion)
        for mode in args.modes.split(","):
            first = (method, k, weight) == (args.method.split(",")[0], args.rrf_k[0], args.keyword_weight[0])
            if mode != "hybrid" and not first:
                continue  # fusion only changes hybrid mode
            run = {}
            for qid, text in dataset.queries.items():
                request = SearchRequest(
                    query=text, top_k=100, collection=collection, mode=mode, group_by="document"
                )
                hits = service.search(principal, request).hits
                run[qid] = metrics.ranking((hit.document_id for hit in hits), corpus_id_of)
            scores = metrics.per_query(dataset.qrels, run)
            row = {
                "mode": mode,
                "title_boost": title,
                "heading_boost": heading,
                "method": method,
                "rrf_k": int(k),
                "keyword_weight": weight,
                **{m: sum(s[m] for s in scores.values()) / len(scores) for m in metrics.MEASURES},
                **{
                    f"ndcg@10 {name}": sum(scores[q]["ndcg@10"] for q in ids) / len(ids)
                    for name, ids in halves.items()
                },
            }
            results.append(row)
            print(
                f"{mode:<8} title {title:<4g} heading {heading:<4g} {method:<6} k {int(k):<4} kw {weight:<4g} "
                f"ndcg@10 {row['ndcg@10']:.4f} (odd {row['ndcg@10 odd']:.4f}, even {row['ndcg@10 even']:.4f}) "
                f"R@100 {row['recall@100']:.4f} mrr {row['mrr']:.4f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
