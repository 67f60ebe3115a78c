"""A/B of the retrieval path's settings on the SciFact subset, each pair interleaved in one process.

    .venv/bin/python -m bench.retrieval threads    # a query's embedding pass on one torch thread or all
    .venv/bin/python -m bench.retrieval optimize   # when a write folds the flat rows into the indexes
    .venv/bin/python -m bench.retrieval texts      # search halves with texts, or ids first and texts after
    .venv/bin/python -m bench.retrieval all --rounds 3 --json out.json

The index is LanceIndex on a temporary directory, holding the 76 abstracts of `tests/data/scifact-subset`
in chunks of at most CHUNK_WORDS words (under the title as heading), embedded by the real embedding
server; the queries are SciFact's dev claims. Hybrid search goes through the search service itself (its
keyword half beside the embedding call and the vector half), as the retrieve function runs it, top_k 5.
Within a pair the order is shuffled per query and round, so both sides see the same background load.
Figures: p50 and p90 of each side, and the median of the per-query differences (B - A).

- threads: two embedding servers, SMALL_PASS_TOKENS=0 (every pass on all of torch's threads) against
  the default (a query's pass on one thread); hybrid, vector-only and the embedding call alone.
- optimize: two tables written one document at a time, interleaved document by document: the old
  policy (optimize once this writer has written 2,000 rows) against `LanceIndex._due`. `--base N`
  first loads N synthetic chunks (bench.search's corpus) into both, to see the write cost at size.
  Then keyword, vector and hybrid search over each table as the writes left it.
- texts: each half fetching its candidates with their texts (as the adapter does) against ids and
  scores first, then the texts of the fused top_k only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.search import percentile
from ragline.contracts import Chunk, Principal, SearchMode, SearchRequest
from ragline.search.port import IndexedChunk, ScoredChunk, SearchFilter

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "scifact-subset" / "corpus.jsonl"
QUERIES = [
    REPO.parent / "shared" / "data" / "scifact-dev" / "queries.jsonl",
    CORPUS.with_name("queries.jsonl"),
]
GROUP = "bench"
CHUNK_WORDS = 120  # about 160-200 MiniLM tokens, like the platform's 200-token chunks
TOP_K = 5
CANDIDATES = 20  # what the search service asks each half for at top_k 5
DIMENSION = 384


def corpus_chunks() -> list[list[Chunk]]:
    """The subset's abstracts as chunks, one list per document."""
    documents = []
    for line in CORPUS.read_text().splitlines():
        record = json.loads(line)
        words = record["text"].split()
        chunks, start = [], 0
        for ordinal, first in enumerate(range(0, max(len(words), 1), CHUNK_WORDS)):
            text = " ".join(words[first : first + CHUNK_WORDS])
            chunks.append(
                Chunk(
                    document_id=f"scifact-{record['_id']}",
                    version=1,
                    ordinal=ordinal,
                    collection="default",
                    title=record["title"],
                    text=text,
                    token_count=int(len(text.split()) * 1.4),
                    heading_path=[record["title"]],
                    char_start=start,
                    char_end=start + len(text),
                    allowed_groups=[GROUP],
                )
            )
            start += len(text) + 1
        documents.append(chunks)
    return documents


def queries(limit: int) -> list[str]:
    path = next(p for p in QUERIES if p.exists())
    return [json.loads(line)["text"] for line in path.read_text().splitlines()][:limit]


def stats(ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(ms, 0.5),
        "p90": percentile(ms, 0.9),
        "mean": statistics.fmean(ms),
        "n": len(ms),
    }


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """The per-sample differences b - a: median and quartiles."""
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    q1, _, q3 = statistics.quantiles(diffs, n=4)
    return {"median": statistics.median(diffs), "q1": q1, "q3": q3}


def timed(call: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    call(*args)
    return (time.perf_counter() - started) * 1000


def interleave(
    sides: dict[str, Callable[[str], Any]],
    items: Sequence[str],
    rounds: int,
    seed: int = 3,
    pause_s: float = 0.02,
) -> dict[str, list[float]]:
    """ms per call of each side, per item and round, the sides' order shuffled every time; a short
    pause between calls, as between requests, so one call's leftover work does not land on the next."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for item in items:
            order = list(sides)
            rng.shuffle(order)
            for name in order:
                time.sleep(pause_s)
                times[name].append(timed(sides[name], item))
    return times


def report(title: str, times: dict[str, list[float]], out: dict[str, Any]) -> None:
    (a, ta), (b, tb) = list(times.items())[:2]
    figures = {name: stats(ms) for name, ms in times.items()} | {f"{b} - {a}": paired(ta, tb)}
    out[title] = figures
    print(f"\n{title}")
    for name, ms in times.items():
        s = stats(ms)
        print(
            f"  {name:28s} p50 {s['p50']:7.2f} ms   p90 {s['p90']:7.2f} ms   mean {s['mean']:7.2f} ms   n={s['n']}"
        )
    d = figures[f"{b} - {a}"]
    print(f"  {b} - {a}: median {d['median']:+.2f} ms (quartiles {d['q1']:+.2f} .. {d['q3']:+.2f})")


# --------------------------------------------------------------------------------------------
# The parts
# --------------------------------------------------------------------------------------------


class Embedding:
    """Embedding servers (`sagemaker/embedding/serve.py`) as the retrieve function calls them."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._servers: list[Any] = []

    def start(self, **env: str) -> Any:
        from functions.retrieve.adapters.embedder import QueryEmbedder
        from ragline.endpoints.embedding import embedding_client
        from ragline.local.harness import ModelServer
        from ragline.settings import Settings

        server = ModelServer("embedding", self._folder / f"embedding-{len(self._servers)}.log", env=env)
        self._servers.append(server)
        url = server.start()
        settings = Settings(embedding_backend="http", embedding_endpoint=url)
        return QueryEmbedder(embedding_client(settings, truncate=True))

    def stop(self) -> None:
        for server in self._servers:
            server.stop()


def connect(folder: Path) -> Any:
    import lancedb

    return lancedb.connect(str(folder), read_consistency_interval=timedelta(0))


def new_index(db: Any, table: str, *, old_policy: bool = False) -> Any:
    from ragline.search.lance import LanceIndex

    cls = _counting_index_class() if old_policy else LanceIndex
    index = cls(db, table, dimension=DIMENSION)
    index.ensure_index()
    return index


def _counting_index_class() -> type:
    from ragline.search.lance import LanceIndex

    class CountingIndex(LanceIndex):
        """The policy before `_due`: optimize once this writer has written 2,000 rows."""

        def _due(self) -> bool:
            return self._unoptimized >= 2000

    return CountingIndex


def embed_documents(embedder: Any, documents: list[list[Chunk]]) -> list[list[IndexedChunk]]:
    flat = [chunk for document in documents for chunk in document]
    vectors = []
    for start in range(0, len(flat), 32):
        vectors.extend(embedder.embed([c.text for c in flat[start : start + 32]]))
    it = iter(vectors)
    return [[IndexedChunk(chunk, next(it)) for chunk in document] for document in documents]


def service(index: Any, embedder: Any) -> Any:
    from functions.retrieve.domain.service import SearchService

    return SearchService(index, embedder)


PRINCIPAL = Principal(user_id="bench", groups=frozenset({GROUP}))
FILTER = SearchFilter.for_principal(PRINCIPAL)


def search(svc: Any, mode: SearchMode) -> Callable[[str], Any]:
    return lambda q: svc.search(PRINCIPAL, SearchRequest(query=q, top_k=TOP_K, mode=mode))


# --------------------------------------------------------------------------------------------
# The experiments
# --------------------------------------------------------------------------------------------


def threads_ab(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> None:
    embedding = Embedding(work)
    try:
        all_threads = embedding.start(SMALL_PASS_TOKENS="0")
        one_thread = embedding.start(SMALL_PASS_TOKENS="128")
        index = new_index(connect(work / "threads"), "chunks")
        for document in embed_documents(one_thread, corpus_chunks()):
            index.upsert(document)
        index.optimize()
        claims = queries(args.queries)
        sides = {"all threads": all_threads, "one thread": one_thread}
        for embedder in sides.values():  # warm both: first passes allocate
            for q in claims[:5]:
                embedder.embed([q])
        report(
            "embedding call alone",
            interleave({n: (lambda q, e=e: e.embed([q])) for n, e in sides.items()}, claims, args.rounds),
            out,
        )
        for mode in (SearchMode.HYBRID, SearchMode.VECTOR):
            svcs = {n: search(service(index, e), mode) for n, e in sides.items()}
            report(f"{mode.value} search", interleave(svcs, claims, args.rounds), out)
    finally:
        embedding.stop()


def optimize_ab(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> None:
    embedding = Embedding(work)
    try:
        embedder = embedding.start()
        documents = embed_documents(embedder, corpus_chunks())
        db = connect(work / "optimize")
        sides = {"old: 2,000 rows": new_index(db, "old", old_policy=True), "_due": new_index(db, "new")}
        if args.base:
            from bench.search import synthetic_corpus

            corpus = synthetic_corpus(args.base)
            base = [IndexedChunk(c, v) for c, v in zip(corpus.chunks(), corpus.vectors, strict=True)]
            for index in sides.values():
                # Not visible to the bench's group: the base only makes the table large.
                for start in range(0, len(base), 10_000):
                    index.upsert(base[start : start + 10_000])
                index.optimize()
        rng = random.Random(5)
        writes: dict[str, list[float]] = {name: [] for name in sides}
        for document in documents:
            order = list(sides)
            rng.shuffle(order)
            for name in order:
                writes[name].append(timed(sides[name].upsert, document))
        report(f"upsert of one abstract (base {args.base} rows)", writes, out)
        for name, index in sides.items():
            s = index._writable().index_stats("text_idx")
            print(
                f"  {name}: {s.num_unindexed_rows} of {s.num_indexed_rows + s.num_unindexed_rows} rows flat"
            )
            out[f"flat rows ({name})"] = s.num_unindexed_rows
        claims = queries(args.queries)
        for mode in (SearchMode.KEYWORD, SearchMode.VECTOR, SearchMode.HYBRID):
            svcs = {n: search(service(index, embedder), mode) for n, index in sides.items()}
            report(f"{mode.value} search after the writes", interleave(svcs, claims, args.rounds), out)
    finally:
        embedding.stop()


def texts_ab(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> None:
    from lancedb.query import MultiMatchQuery

    from functions.retrieve.domain.fusion import rrf
    from ragline.search.lance import sql_string, where_clause

    embedding = Embedding(work)
    try:
        embedder = embedding.start()
        index = new_index(connect(work / "texts"), "chunks")
        for document in embed_documents(embedder, corpus_chunks()):
            index.upsert(document)
        index.optimize()
        claims = queries(args.queries)
        vectors = {q: embedder.embed([q])[0] for q in claims}
        table = index._readable()
        where = where_clause(FILTER, set(table.schema.names))

        def keyword_ids(q: str) -> list[dict[str, Any]]:
            match = MultiMatchQuery(q, index._match_columns, boosts=index._match_boosts)
            query = table.search(match, query_type="fts").where(where, prefilter=True)
            return query.select(["chunk_id", "_score"]).limit(CANDIDATES).to_list()

        def vector_ids(q: str) -> list[dict[str, Any]]:
            query = table.search(list(vectors[q]), vector_column_name="vector", query_type="vector")
            query = query.distance_type("cosine").nprobes(1 << 20).where(where, prefilter=True)
            return query.select(["chunk_id", "_distance"]).limit(CANDIDATES).to_list()

        def with_texts(q: str) -> list[ScoredChunk]:
            keyword = index.keyword_search(q, FILTER, CANDIDATES)
            vector = index.vector_search(vectors[q], FILTER, CANDIDATES)
            return rrf([keyword, vector])[:TOP_K]

        def ids_first(q: str) -> list[dict[str, Any]]:
            scores: dict[str, float] = {}
            for ranked in (keyword_ids(q), vector_ids(q)):
                for rank, row in enumerate(ranked, start=1):
                    scores[row["chunk_id"]] = scores.get(row["chunk_id"], 0.0) + 1 / (60 + rank)
            winners = ", ".join(sql_string(c) for c in sorted(scores, key=lambda c: -scores[c])[:TOP_K])
            fetch = table.search().where(f"chunk_id IN ({winners})")
            return fetch.select(index._columns()).limit(TOP_K).to_list()

        for q in claims[:5]:
            with_texts(q), ids_first(q)
        # The halves in sequence here (the service runs them side by side), so the fetching differs.
        sides = {"texts": with_texts, "ids first": ids_first}
        report("keyword + vector halves, fused", interleave(sides, claims, args.rounds), out)
        sides = {"texts": lambda q: index.keyword_search(q, FILTER, CANDIDATES), "ids": keyword_ids}
        report("keyword half alone, k=20", interleave(sides, claims, args.rounds), out)
    finally:
        embedding.stop()


EXPERIMENTS = {"threads": threads_ab, "optimize": optimize_ab, "texts": texts_ab}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", type=int, default=0, help="optimize: synthetic rows loaded first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            EXPERIMENTS[name](args, Path(folder), out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
