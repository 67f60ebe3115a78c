"""One BEIR evaluation end to end: load and subset the dataset, ingest it into its own collection
through the API (skipped when that collection already holds it), run every query in every mode,
score the runs, and report."""

from __future__ import annotations

import re
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from ragline.bulk import api_headers
from ragline.evaluation import metrics
from ragline.evaluation.beir import Dataset, load
from ragline.evaluation.client import Ingested, PlatformClient

MODES = ("keyword", "vector", "hybrid")
TOP_K = 100  # the API's maximum, and the depth recall@100 needs
USER = "ragline-eval"
TOKEN_TTL_S = 12 * 3600  # a full-corpus ingest outlasts the default hour


@dataclass(frozen=True)
class Options:
    folder: Path
    split: str = "test"
    queries: int | None = None
    corpus_sample: int | None = None
    seed: int = 0
    modes: tuple[str, ...] = MODES
    fusion: dict[str, float] = field(default_factory=dict)  # k, keyword_weight, vector_weight as given
    collection: str | None = None
    groups: tuple[str, ...] = ("beir-eval",)
    concurrency: int = 4
    # The platform's state (keys, logs): kept here, or a temporary one; with `url`, whose keys sign the token.
    state_dir: Path | None = None
    url: str | None = None  # a running gateway instead of starting a platform
    token: str | None = None
    api_key: str | None = None  # x-api-key, for a gateway that requires one


@dataclass
class ModeResult:
    metrics: dict[str, float]
    latency_p50_ms: float
    latency_p95_ms: float
    queries_with_hits: int
    degraded: int
    foreign_hits: int  # hits on documents outside the corpus: the collection holds something else too


@dataclass
class Report:
    dataset: str
    split: str
    collection: str
    queries: int
    corpus: int
    ingest_seconds: float
    uploaded: int
    reused: int
    # Corpus ids whose content is byte-identical to another's: the API keeps one document for both, so
    # only the first can be retrieved (a dataset property, reported rather than fatal).
    merged: list[tuple[str, str]]
    fusion: dict[str, float]
    modes: dict[str, ModeResult]
    random: dict[str, float]  # the same measures for a seeded random ranking of the same corpus
    per_query: dict[str, dict[str, dict[str, float]]]  # mode → query id → measures

    def to_json(self) -> dict:
        return asdict(self)

    def lines(self) -> Iterator[str]:
        yield (
            f"{self.dataset} ({self.split}): {self.queries} queries, {self.corpus} documents in "
            f"collection {self.collection}"
        )
        ingest = (
            f"ingest {self.ingest_seconds:.1f} s ({self.uploaded} uploaded, {self.reused} already indexed)"
        )
        yield ingest + (f"; fusion {self.fusion}" if self.fusion else "")
        names = list(metrics.MEASURES)
        yield f"{'mode':<9}" + "".join(f"{n:>12}" for n in names) + f"{'p50 ms':>10}{'p95 ms':>10}"
        for mode, result in self.modes.items():
            yield (
                f"{mode:<9}"
                + "".join(f"{result.metrics[n]:>12.4f}" for n in names)
                + f"{result.latency_p50_ms:>10.1f}{result.latency_p95_ms:>10.1f}"
            )
        yield f"{'random':<9}" + "".join(f"{self.random[n]:>12.4f}" for n in names)
        if self.merged:
            yield f"warning: {len(self.merged)} corpus documents duplicate another's content: {self.merged[:3]}"
        for mode, result in self.modes.items():
            if result.degraded:
                yield f"warning: {result.degraded} {mode} searches were degraded (keyword half only)"
            if result.foreign_hits:
                yield f"warning: {result.foreign_hits} {mode} hits were documents outside the corpus"


class IngestFailed(RuntimeError):
    pass


def collection_name(dataset: Dataset, options: Options) -> str:
    """One collection per distinct corpus, so a rerun with the same arguments finds its index and a
    different subset never mixes with it."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", dataset.name.lower()).strip("-_") or "dataset"
    suffix = ""
    if options.corpus_sample is not None:
        suffix = f"-{options.split}-q{options.queries or 'all'}-s{options.corpus_sample}-r{options.seed}"
    return f"beir-{slug[: 64 - len('beir-') - len(suffix)]}{suffix}"


def evaluate(
    client: PlatformClient,
    dataset: Dataset,
    options: Options,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> Report:
    collection = options.collection or collection_name(dataset, options)
    client.ensure_collection(collection, f"BEIR {dataset.name}, written by `ragline eval beir`")
    ingested = client.ingest(
        list(dataset.corpus.values()),
        collection=collection,
        allowed_groups=list(options.groups),
        concurrency=options.concurrency,
        progress=progress,
    )
    _require_complete(ingested)
    modes = {}
    per_query = {}
    for mode in options.modes:
        run, seconds, degraded, foreign = {}, [], 0, 0
        for done, (query_id, text) in enumerate(dataset.queries.items(), start=1):
            searched = client.search(
                text, mode=mode, collection=collection, top_k=TOP_K, fusion=options.fusion
            )
            run[query_id] = metrics.ranking(searched.document_ids, ingested.corpus_id_of)
            foreign += sum(1 for d in searched.document_ids if d not in ingested.corpus_id_of)
            seconds.append(searched.seconds)
            degraded += searched.degraded
            if progress:
                progress(f"{mode} queries", done, len(dataset.queries))
        per_query[mode] = metrics.per_query(dataset.qrels, run)
        modes[mode] = ModeResult(
            metrics=metrics.mean(dataset.qrels, run),
            latency_p50_ms=1000 * statistics.median(seconds),
            latency_p95_ms=1000 * _percentile(seconds, 0.95),
            queries_with_hits=sum(1 for ranked in run.values() if ranked),
            degraded=degraded,
            foreign_hits=foreign,
        )
    baseline = metrics.random_run(dataset.queries, list(dataset.corpus), depth=TOP_K, seed=options.seed)
    return Report(
        dataset=dataset.name,
        split=options.split,
        collection=collection,
        queries=len(dataset.queries),
        corpus=len(dataset.corpus),
        ingest_seconds=ingested.seconds,
        uploaded=ingested.uploaded,
        reused=ingested.reused,
        merged=ingested.merged,
        fusion=dict(options.fusion),
        modes=modes,
        random=metrics.mean(dataset.qrels, baseline),
        per_query=per_query,
    )


def dataset_for(options: Options) -> Dataset:
    dataset = load(options.folder, options.split).subset(options.queries, options.corpus_sample, options.seed)
    if not dataset.queries:
        raise ValueError(f"no judged queries in {options.folder} for split {options.split}")
    return dataset


def run_beir(
    options: Options, dataset: Dataset, *, progress: Callable[[str, int, int], None] | None = None
) -> Report:
    with (
        _api(options) as (base_url, token),
        httpx.Client(base_url=base_url, headers=api_headers(token, options.api_key), timeout=120) as http,
    ):
        return evaluate(PlatformClient(http), dataset, options, progress=progress)


@contextmanager
def _api(options: Options) -> Iterator[tuple[str, str]]:
    """(base URL, bearer token): the given gateway, or a local platform started for this run."""
    from ragline.local.idp import LocalIdentityProvider

    if options.url:
        token = options.token or LocalIdentityProvider(options.state_dir or Path(".ragline")).issue(
            USER, options.groups, ttl_s=TOKEN_TTL_S
        )
        yield options.url.rstrip("/"), token
        return
    from ragline.local.harness import running_platform

    # `ragline dev` starts on an empty index (its document records live in the in-memory AWS emulator,
    # so an index kept from a previous start would hold documents nothing knows of): a platform started
    # here ingests every time. Reusing an ingested corpus across runs means a running platform (--url).
    with _state_dir(options.state_dir) as state, running_platform(state) as platform:
        yield platform.base_url, LocalIdentityProvider(state).issue(USER, options.groups, ttl_s=TOKEN_TTL_S)


@contextmanager
def _state_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="ragline-eval-") as tmp:
        yield Path(tmp)


def _require_complete(ingested: Ingested) -> None:
    if ingested.failed:
        listed = "\n".join(f"  {o.path}: {o.reason}" for o in ingested.failed[:20])
        raise IngestFailed(f"{len(ingested.failed)} documents were not indexed:\n{listed}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
