"""Search latency at scale: the embedded engine against the fastest plain libraries on the same data,
and the same index behind the local gateway.

    .venv/bin/python -m bench.search                                # 100,000 chunks, 200 queries
    .venv/bin/python -m bench.search --chunks 10000 --queries 50    # a quicker run
    .venv/bin/python -m bench.search --no-gateway --json out.json   # in-process only, figures as JSON

The corpus is synthetic and deterministic from `--seed`: documents of 10 chunks on one of a few
hundred topics; chunk text drawn from a Zipf vocabulary of pseudo-words, partly from its topic's own
words; 384-d unit vectors clustered around the topic's centroid, each document a little apart; each
document visible to one of 10 groups, so a caller in one group passes about 10% of the chunks.
Queries are 2-4 words of a topic and a vector near that topic's centroid, from a caller in a random
group.

Three systems, each in keyword, vector and hybrid mode, all with the caller's ACL filter:
  engine   LanceIndex on a temporary directory, in this process; hybrid = the search service (both
           halves, 40 candidates each for top_k 10, run side by side and fused by rrf)
  floor    the fastest plain libraries on the same data in this process: exact kNN with numpy over
           the caller's group's vectors, bm25s over the engine's fields (text, title, heading path)
           with its boosts; hybrid = both + the same rrf
  gateway  POST /v1/search on `ragline dev` with a real token, timed by the client (keep-alive);
           its query is embedded by the real embedding model, so it includes that call (measured
           on its own too); its vectors are not the synthetic ones, so only its latency means much
Engine and floor calls are interleaved in a shuffled order per query, after a warm-up, and each
query runs `--rounds` times. recall@10 is the engine's vector search against exact search.
Targets: engine hybrid p99 <= 2x the floor's, recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from functions.retrieve.domain.fusion import rrf
from ragline.contracts import Chunk
from ragline.search.port import IndexedChunk, ScoredChunk, SearchFilter

DIMENSION = 384
GROUPS = tuple(f"group-{n}" for n in range(10))
TABLE = "ragline-chunks"  # the table the local platform's settings name (Settings.search_index)
CHUNKS_PER_DOCUMENT = 10
TOP_K = 10
CANDIDATES = 40  # what the service asks each half for at top_k 10 (CANDIDATES_PER_HIT x top_k)
MODES = ("keyword", "vector", "hybrid")
# LanceIndex's defaults (and the OpenSearch adapter's): one best-field multi-match, a chunk's score
# is its best field's BM25 score times that field's boost.
FIELD_BOOSTS = {"text": 1.0, "title": 2.0, "heading_path": 1.0}
SECTIONS_PER_DOCUMENT = 3

VOCABULARY = 4000
ZIPF_EXPONENT = 1.07
TOPIC_VOCABULARY = 150  # words each topic favours, drawn from outside the most common 100
TOPIC_SHARE = 0.3  # of a chunk's words, the share drawn from its topic's words


# --------------------------------------------------------------------------------------------
# Synthetic corpus and queries
# --------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    vocabulary: list[str]
    topic_words: np.ndarray  # (topics, TOPIC_VOCABULARY) word ids
    centroids: np.ndarray  # (topics, DIMENSION) unit vectors
    titles: list[str]  # per chunk (its document's)
    headings: list[str]  # per chunk: the heading of its section, under the title
    texts: list[str]
    topics: np.ndarray  # per chunk
    groups: np.ndarray  # per chunk, index into GROUPS
    vectors: np.ndarray  # (chunks, DIMENSION) float32 unit vectors
    _chunks: list[Chunk] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    def chunks(self) -> list[Chunk]:
        """The chunks as the index stores them (built once: 100,000 take a few seconds)."""
        if not self._chunks:
            self._chunks = [self._chunk(n) for n in range(len(self))]
        return self._chunks

    def _chunk(self, n: int) -> Chunk:
        text = self.texts[n]
        return Chunk(
            document_id=f"doc-{n // CHUNKS_PER_DOCUMENT:06d}",
            version=1,
            ordinal=n % CHUNKS_PER_DOCUMENT,
            collection="default",
            title=self.titles[n],
            text=text,
            token_count=int(len(text.split()) * 1.3),
            heading_path=[self.titles[n], self.headings[n]],
            char_start=0,
            char_end=len(text),
            allowed_groups=[GROUPS[self.groups[n]]],
        )


@dataclass(frozen=True)
class Query:
    text: str
    vector: np.ndarray  # float32 unit vector
    group: int  # the caller's one group


def pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    """Distinct words of 2-4 consonant-vowel syllables. No 'e', 's' or 'y', so English stemming (the
    engine's) leaves nearly all of them whole and none is an English stop word."""
    consonants, vowels = "bdfgklmnprtvz", "aiou"
    words: dict[str, None] = {}
    while len(words) < count:
        syllables = rng.integers(2, 5)
        word = "".join(consonants[rng.integers(13)] + vowels[rng.integers(4)] for _ in range(syllables))
        words.setdefault(word)
    return list(words)


def zipf_weights(count: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    return weights / weights.sum()


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def noise(rng: np.random.Generator, shape: tuple[int, ...], norm: float) -> np.ndarray:
    """Gaussian vectors of about the given length."""
    return rng.standard_normal(shape) * (norm / np.sqrt(shape[-1]))


def synthetic_corpus(chunks: int, seed: int = 7) -> Corpus:
    rng = np.random.default_rng(seed)
    vocabulary = pseudo_words(rng, VOCABULARY)
    topics = max(8, min(300, chunks // 300))
    documents = -(-chunks // CHUNKS_PER_DOCUMENT)

    # Each topic favours its own words (from outside the most common 100), also Zipf-weighted.
    topic_words = np.stack(
        [rng.choice(np.arange(100, VOCABULARY), TOPIC_VOCABULARY, replace=False) for _ in range(topics)]
    )
    # Centroids share a common direction (sentence embeddings are anisotropic: unrelated texts have
    # cosine ~0.1-0.2); a document sits near its topic's centroid, its chunks near the document.
    common = unit(rng.standard_normal(DIMENSION))
    centroids = unit(0.4 * common + noise(rng, (topics, DIMENSION), 1.0))
    document_topic = rng.integers(topics, size=documents)
    document_group = rng.integers(len(GROUPS), size=documents)
    document_vectors = centroids[document_topic] + noise(rng, (documents, DIMENSION), 0.6)

    owner = np.arange(chunks) // CHUNKS_PER_DOCUMENT
    vectors = unit(document_vectors[owner] + noise(rng, (chunks, DIMENSION), 0.6))
    chunk_topics = document_topic[owner]

    lengths = rng.integers(50, 151, size=chunks)
    total = int(lengths.sum())
    words = rng.choice(VOCABULARY, size=total, p=zipf_weights(VOCABULARY))
    from_topic = rng.random(total) < TOPIC_SHARE
    word_topic = np.repeat(chunk_topics, lengths)[from_topic]
    picks = rng.choice(TOPIC_VOCABULARY, size=int(from_topic.sum()), p=zipf_weights(TOPIC_VOCABULARY))
    words[from_topic] = topic_words[word_topic, picks]

    ends = np.cumsum(lengths)
    texts = [
        " ".join(vocabulary[w] for w in words[end - length : end])
        for end, length in zip(ends, lengths, strict=True)
    ]
    document_titles = [
        " ".join(vocabulary[w] for w in topic_words[t, rng.integers(0, 30, size=rng.integers(3, 7))])
        for t in document_topic
    ]
    # Sections of a document: consecutive runs of its chunks under a heading of 1-3 topic words.
    section = np.arange(chunks) % CHUNKS_PER_DOCUMENT * SECTIONS_PER_DOCUMENT // CHUNKS_PER_DOCUMENT
    section_headings = {
        (d, s): " ".join(
            vocabulary[w]
            for w in topic_words[document_topic[d], rng.integers(0, 60, size=rng.integers(1, 4))]
        )
        for d in range(documents)
        for s in range(SECTIONS_PER_DOCUMENT)
    }
    return Corpus(
        vocabulary=vocabulary,
        topic_words=topic_words,
        centroids=centroids,
        titles=[document_titles[d] for d in owner],
        headings=[section_headings[d, s] for d, s in zip(owner.tolist(), section.tolist(), strict=True)],
        texts=texts,
        topics=chunk_topics,
        groups=document_group[owner],
        vectors=vectors,
    )


def synthetic_queries(corpus: Corpus, count: int, seed: int = 11) -> list[Query]:
    """2-4 words of a random topic (its more common words, as people type them) and a vector near its
    centroid, as far from it as a chunk of an unseen document; the caller is in one random group."""
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(count):
        topic = rng.integers(len(corpus.centroids))
        picks = rng.choice(40, size=rng.integers(2, 5), replace=False)
        text = " ".join(corpus.vocabulary[w] for w in corpus.topic_words[topic, picks])
        vector = unit(corpus.centroids[topic] + noise(rng, (DIMENSION,), 0.85))
        queries.append(Query(text=text, vector=vector, group=int(rng.integers(len(GROUPS)))))
    return queries


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(np.ceil(q * len(ordered))) - 1))]


def summary(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "mean_ms": statistics.fmean(seconds) * 1000,
        "n": len(seconds),
    }


def recall_at_k(found: Sequence[str], exact: Sequence[str], k: int = TOP_K) -> float:
    """Share of the exact top k that the search found in its own top k (1.0 when there is none)."""
    truth = set(exact[:k])
    return len(truth & set(found[:k])) / len(truth) if truth else 1.0


# --------------------------------------------------------------------------------------------
# The systems
# --------------------------------------------------------------------------------------------


class Engine:
    """LanceIndex in this process, called as the search service calls it."""

    def __init__(self, path: Path) -> None:
        import lancedb

        from ragline.search.lance import LanceIndex

        self.path = path
        # As the factory connects: every read sees the latest version.
        self.index = LanceIndex(
            lancedb.connect(str(path), read_consistency_interval=timedelta(0)), TABLE, dimension=DIMENSION
        )

    def load(self, corpus: Corpus, batch: int = 10_000) -> None:
        self.index.ensure_index()
        chunks = corpus.chunks()
        for start in range(0, len(chunks), batch):
            end = min(start + batch, len(chunks))
            self.index.upsert([IndexedChunk(chunks[n], corpus.vectors[n]) for n in range(start, end)])
        self.index.optimize()

    def indices(self) -> list[str]:
        """The table's indexes, as Lance describes them (which columns are indexed, and how)."""
        import lancedb

        indices = lancedb.connect(str(self.path)).open_table(TABLE).list_indices()
        return [f"{', '.join(i.columns)} {i.index_type}" for i in indices]

    def keyword(self, query: Query, k: int = CANDIDATES) -> list[ScoredChunk]:
        return self.index.keyword_search(query.text, _filter(query.group), k)

    def vector(self, query: Query, k: int = CANDIDATES) -> list[ScoredChunk]:
        return self.index.vector_search(query.vector, _filter(query.group), k)

    def hybrid(self, query: Query) -> list[str]:
        """Through the search service itself (its keyword half runs beside the vector half), with the
        query's vector standing in for the embedding endpoint; the hits' chunk ids."""
        from functions.retrieve.domain.service import SearchService
        from ragline.contracts import Principal, SearchRequest

        service = SearchService(self.index, _KnownVector(query))
        principal = Principal(user_id="bench", groups=frozenset({GROUPS[query.group]}))
        response = service.search(principal, SearchRequest(query=query.text, top_k=TOP_K, mode="hybrid"))
        return [hit.chunk_id for hit in response.hits]


class _KnownVector:
    def __init__(self, query: Query) -> None:
        self._vector = [float(x) for x in query.vector]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vector for _ in texts]


class Floor:
    """The fastest plain libraries on the same data, everything they need prepared before timing.

    Vectors: exact kNN by one matmul over the caller's group's vectors (a contiguous float32 matrix
    per group) and argpartition.

    BM25: bm25s, one index per field (text, title, heading path) with Lance's k1 and b; a chunk's
    score is its best field's score times the field's boost, as in the engine's multi-match.
    Visibility: a 0/1 float32 mask per group multiplied into the scores, then zero scores dropped.
    That is what bm25s's own `weight_mask` argument does (`scores *= weight_mask`); it is done here
    once on the combined score instead of once per field. Not one index per group: that would change
    the IDF (the engine's pre-filter scores against the whole corpus), and would not serve a caller
    in several groups."""

    def __init__(self, corpus: Corpus) -> None:
        import bm25s

        self.chunks = corpus.chunks()
        self.rows = [np.flatnonzero(corpus.groups == g) for g in range(len(GROUPS))]
        self.matrices = [np.ascontiguousarray(corpus.vectors[rows], dtype=np.float32) for rows in self.rows]
        self.masks = [(corpus.groups == g).astype(np.float32) for g in range(len(GROUPS))]
        fields = {
            "text": corpus.texts,
            "title": corpus.titles,
            "heading_path": [
                f"{title} {heading}" for title, heading in zip(corpus.titles, corpus.headings, strict=True)
            ],
        }
        self.fields = []
        for name, texts in fields.items():
            bm25 = bm25s.BM25(k1=1.2, b=0.75)
            bm25.index(bm25s.tokenize(texts, stopwords=None, show_progress=False), show_progress=False)
            self.fields.append((bm25, FIELD_BOOSTS[name]))

    def keyword(self, query: Query, k: int = CANDIDATES) -> list[ScoredChunk]:
        words = query.text.lower().split()
        (first, boost), *others = self.fields
        scores = first.get_scores(words) * boost
        for bm25, boost in others:
            np.maximum(scores, bm25.get_scores(words) * boost, out=scores)
        scores *= self.masks[query.group]
        top = _top(scores, k)
        return [ScoredChunk(self.chunks[n], float(scores[n])) for n in top if scores[n] > 0]

    def vector(self, query: Query, k: int = CANDIDATES) -> list[ScoredChunk]:
        rows = self.rows[query.group]
        scores = self.matrices[query.group] @ query.vector
        return [ScoredChunk(self.chunks[rows[n]], float(scores[n])) for n in _top(scores, k)]

    def hybrid(self, query: Query) -> list[ScoredChunk]:
        return _fuse(self.keyword(query), self.vector(query))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    if len(scores) <= k:
        return np.argsort(-scores)
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def _filter(group: int) -> SearchFilter:
    return SearchFilter(groups_any=frozenset({GROUPS[group]}))


def _fuse(keyword: list[ScoredChunk], vector: list[ScoredChunk]) -> list[ScoredChunk]:
    return rrf([keyword, vector])[:TOP_K]


def _ids(results: list[ScoredChunk]) -> list[str]:
    return [item.chunk.chunk_id for item in results]


def time_in_process(
    systems: dict[str, object], queries: list[Query], rounds: int, warmup: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per call for each system and mode; every query runs every (system, mode) once per
    round, in a shuffled order, so drift on a busy machine spreads over all of them alike."""
    calls = [(name, mode) for name in systems for mode in MODES]
    for query in queries[:warmup]:
        for name, mode in calls:
            getattr(systems[name], mode)(query)
    rng = np.random.default_rng(seed)
    timings: dict[str, dict[str, list[float]]] = {name: {mode: [] for mode in MODES} for name in systems}
    for _ in range(rounds):
        for query in queries:
            for n in rng.permutation(len(calls)):
                name, mode = calls[n]
                call: Callable[[Query], list[ScoredChunk]] = getattr(systems[name], mode)
                started = time.perf_counter()
                call(query)
                timings[name][mode].append(time.perf_counter() - started)
    return timings


def vector_recall(engine: Engine, floor: Floor, queries: list[Query]) -> float:
    """Mean recall@10 of the engine's vector search (k=10) against exact search on the same rows."""
    return statistics.fmean(
        recall_at_k(_ids(engine.vector(q, TOP_K)), _ids(floor.vector(q, TOP_K))) for q in queries
    )


# --------------------------------------------------------------------------------------------
# Through the local gateway
# --------------------------------------------------------------------------------------------


def time_gateway(
    index_dir: Path, queries: list[Query], rounds: int, warmup: int, seed: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Starts `ragline dev`, copies the engine's table into its index directory (the platform wipes
    that directory when it starts, so only after it is up) and times POST /v1/search per mode, plus
    the query's embedding call on its own (from this process to the platform's embedding server)."""
    import httpx

    from ragline.endpoints.embedding import embedding_client
    from ragline.local.harness import running_platform
    from ragline.settings import Settings

    timings: dict[str, list[float]] = {mode: [] for mode in (*MODES, "embedding")}
    with tempfile.TemporaryDirectory() as state, running_platform(Path(state)) as platform:
        started = time.perf_counter()
        target = platform.state_dir.resolve() / "index"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(index_dir / f"{TABLE}.lance", target / f"{TABLE}.lance")
        copy_s = time.perf_counter() - started
        tokens = [platform.token(f"bench-{group}", [group]) for group in GROUPS]
        embedder = embedding_client(
            Settings(
                embedding_backend="http",
                embedding_endpoint=f"http://127.0.0.1:{platform.ports['embedding-port']}",
            )
        )
        hits: dict[str, int] = dict.fromkeys(MODES, 0)
        with httpx.Client(base_url=platform.base_url, timeout=120) as http:

            def search(query: Query, mode: str) -> None:
                response = http.post(
                    "/v1/search",
                    json={"query": query.text, "top_k": TOP_K, "mode": mode},
                    headers={"Authorization": f"Bearer {tokens[query.group]}"},
                )
                if response.status_code != 200:
                    raise RuntimeError(f"POST /v1/search ({mode}): {response.status_code} {response.text}")
                hits[mode] += len(response.json()["hits"])

            calls: dict[str, Callable[[Query], object]] = {
                mode: (lambda q, mode=mode: search(q, mode)) for mode in MODES
            }
            calls["embedding"] = lambda q: embedder.embed([q.text])
            for query in queries[:warmup]:
                for call in calls.values():
                    call(query)
            hits.update(dict.fromkeys(MODES, 0))
            rng = np.random.default_rng(seed)
            names = list(calls)
            for _ in range(rounds):
                for query in queries:
                    for n in rng.permutation(len(names)):
                        started = time.perf_counter()
                        calls[names[n]](query)
                        timings[names[n]].append(time.perf_counter() - started)
    runs = rounds * len(queries)
    return timings, {"copy_index_s": copy_s, **{f"mean_hits_{m}": hits[m] / runs for m in MODES}}


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="times each query runs in-process")
    parser.add_argument("--gateway-rounds", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20, help="queries run untimed first")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-gateway", action="store_true", help="skip the local platform")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for the floor's kNN (0: the library's default, one per core)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.blas_threads:
        # A matrix-vector product over at most ~10k x 384 floats gains little from a second thread on a
        # quiet machine, and OpenBLAS's thread hand-off made p99 15-150 ms on two busy cores. (threadpoolctl
        # comes with sentence-transformers, through scikit-learn.)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")

    def step(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    report: dict = {
        "cpu_count": os.cpu_count(),
        "chunks": args.chunks,
        "queries": args.queries,
        "rounds": args.rounds,
        "seed": args.seed,
        "blas_threads": args.blas_threads or "default",
        "build_s": {},
    }
    build = report["build_s"]
    with tempfile.TemporaryDirectory() as tmp:
        step(f"building a synthetic corpus of {args.chunks} chunks")
        started = time.perf_counter()
        corpus = synthetic_corpus(args.chunks, seed=args.seed)
        queries = synthetic_queries(corpus, args.queries, seed=args.seed + 1)
        warmup = synthetic_queries(corpus, args.warmup, seed=args.seed + 2)
        corpus.chunks()
        build["corpus"] = time.perf_counter() - started

        step("indexing into LanceIndex")
        started = time.perf_counter()
        engine = Engine(Path(tmp) / "index")
        engine.load(corpus)
        build["engine_index"] = time.perf_counter() - started

        step("building the floor (numpy matrices, bm25s)")
        started = time.perf_counter()
        floor = Floor(corpus)
        build["floor_index"] = time.perf_counter() - started

        step(f"timing {args.queries} queries x {args.rounds} rounds in process")
        started = time.perf_counter()
        timings = time_in_process(
            {"engine": engine, "floor": floor}, warmup + queries, args.rounds, len(warmup), args.seed
        )
        build["in_process_queries"] = time.perf_counter() - started
        report["recall_at_10"] = vector_recall(engine, floor, queries)
        report["visible_share"] = float(np.mean([np.mean(corpus.groups == q.group) for q in queries]))
        report["engine_indices"] = engine.indices()
        del engine

        if not args.no_gateway:
            step("starting ragline dev and timing POST /v1/search")
            started = time.perf_counter()
            timings["gateway"], report["gateway_info"] = time_gateway(
                Path(tmp) / "index", warmup + queries, args.gateway_rounds, len(warmup), args.seed
            )
            build["gateway"] = time.perf_counter() - started

    report["latency"] = {
        name: {mode: summary(values) for mode, values in modes.items()} for name, modes in timings.items()
    }
    report["engine_over_floor"] = {
        mode: {
            q: report["latency"]["engine"][mode][f"{q}_ms"] / report["latency"]["floor"][mode][f"{q}_ms"]
            for q in ("p50", "p99")
        }
        for mode in MODES
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_report(report: dict) -> None:
    latency, ratios = report["latency"], report["engine_over_floor"]
    build = report["build_s"]
    print(
        f"{report['chunks']} chunks, {report['queries']} queries x {report['rounds']} rounds in process; "
        f"{report['cpu_count']} CPUs (BLAS threads: {report['blas_threads']}); "
        f"a caller sees {report['visible_share']:.1%} of the chunks"
    )
    print("build (s): " + ", ".join(f"{k} {v:.1f}" for k, v in build.items()))
    print(f"engine indexes: {', '.join(report['engine_indices']) or 'none'}")
    print()
    print(f"{'':10} {'mode':8} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for name, modes in latency.items():
        for mode, row in modes.items():
            print(f"{name:10} {mode:8} {row['p50_ms']:9.2f} {row['p99_ms']:9.2f} {row['mean_ms']:9.2f}")
    print()
    print("engine / floor:")
    for mode in MODES:
        print(f"  {mode:8} p50 {ratios[mode]['p50']:5.2f}x   p99 {ratios[mode]['p99']:5.2f}x")
    hybrid = ratios["hybrid"]["p99"]
    print(f"hybrid p99 engine/floor {hybrid:.2f}x (target <= 2x): {'met' if hybrid <= 2 else 'NOT met'}")
    recall = report["recall_at_10"]
    print(f"vector recall@10 {recall:.3f} (target >= 0.95): {'met' if recall >= 0.95 else 'NOT met'}")
    if "gateway" in latency:
        gateway, embedding = latency["gateway"], latency["gateway"]["embedding"]
        info = report["gateway_info"]
        print(
            "gateway latency includes embedding the query (vector, hybrid): the embedding call alone "
            f"p50 {embedding['p50_ms']:.1f} ms, {embedding['p50_ms'] / gateway['hybrid']['p50_ms']:.0%} of "
            f"hybrid p50; mean hits per query "
            + ", ".join(f"{m} {info[f'mean_hits_{m}']:.1f}" for m in MODES)
        )


if __name__ == "__main__":
    sys.exit(main())
