"""`ragline eval beir`: our plumbing around pytrec_eval (which defines the measures): loading BEIR
files, the deterministic subset, runs built from API hits, and the API client on a fake transport."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import httpx
import pytest

from ragline.evaluation import metrics
from ragline.evaluation.beir import CorpusDocument, Dataset, load, read_qrels
from ragline.evaluation.client import BEIR_ID, PlatformClient
from ragline.evaluation.runner import Options, collection_name


def write_dataset(folder: Path, qrels: str, docs: int = 6) -> Path:
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{n}", "title": f"Title {n}", "text": f"Text {n}."} for n in range(docs)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    queries = [{"_id": q, "text": f"query {q}"} for q in ("q3", "q1", "q2", "q9")]
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "dev.tsv").write_text(qrels)
    return folder


QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\nq3\td0\t1\nq9\td4\t0\n"


# --- BEIR files ---------------------------------------------------------------------------------


def test_qrels_skip_the_header_and_keep_judged_non_relevant_lines(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text(QRELS)
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}, "q3": {"d0": 1}, "q9": {"d4": 0}}


def test_qrels_without_the_header_are_refused(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("q1\td1\t1\n")
    with pytest.raises(ValueError, match="header"):
        read_qrels(path)


def test_load_keeps_file_order_and_only_queries_with_a_relevant_document(tmp_path):
    dataset = load(write_dataset(tmp_path / "tiny-set", QRELS), "dev")
    assert dataset.name == "tiny-set"
    assert list(dataset.queries) == ["q3", "q1", "q2"]  # q9 judges nothing relevant: not evaluated
    assert list(dataset.corpus) == [f"d{n}" for n in range(6)]
    assert dataset.corpus["d1"].markdown() == "# Title 1\n\nText 1."
    with pytest.raises(FileNotFoundError, match="dev"):
        load(tmp_path / "tiny-set", "test")


def test_a_document_without_a_title_is_its_text():
    assert CorpusDocument("x", "", "Only text.").markdown() == "Only text."


# --- the subset ---------------------------------------------------------------------------------


def big_dataset() -> Dataset:
    corpus = {f"d{n}": CorpusDocument(f"d{n}", f"T{n}", "x") for n in range(1000)}
    queries = {f"q{n}": f"query {n}" for n in range(10)}
    qrels = {f"q{n}": {f"d{n * 7}": 1, f"d{n * 7 + 1}": 0} for n in range(10)}
    return Dataset("big", corpus, queries, qrels)


def test_the_subset_is_the_first_queries_every_document_they_judge_and_a_seeded_sample():
    dataset = big_dataset()
    subset = dataset.subset(queries=3, corpus_sample=20, seed=1)
    assert list(subset.queries) == ["q0", "q1", "q2"]
    assert subset.qrels == {q: dataset.qrels[q] for q in ("q0", "q1", "q2")}
    judged = {"d0", "d1", "d7", "d8", "d14", "d15"}
    assert judged <= set(subset.corpus)  # judged non-relevant ones too
    assert len(subset.corpus) == len(judged) + 20
    assert list(subset.corpus) == [d for d in dataset.corpus if d in subset.corpus]  # file order

    again = big_dataset().subset(queries=3, corpus_sample=20, seed=1)
    assert list(again.corpus) == list(subset.corpus)  # deterministic: reruns reuse the same index
    assert list(dataset.subset(queries=3, corpus_sample=20, seed=2).corpus) != list(subset.corpus)


def test_without_a_sample_the_corpus_is_whole_and_a_large_sample_takes_everything():
    dataset = big_dataset()
    assert len(dataset.subset(queries=2).corpus) == 1000
    assert len(dataset.subset(queries=2, corpus_sample=5000).corpus) == 1000
    assert len(dataset.subset(corpus_sample=0).corpus) == 20  # only the judged documents


def test_collection_names_are_valid_and_differ_per_subset():
    dataset = Dataset("SciFact Dev/" + "x" * 80, {}, {}, {})
    full = collection_name(dataset, Options(folder=Path("."), split="dev"))
    small = collection_name(dataset, Options(folder=Path("."), split="dev", queries=20, corpus_sample=100))
    for name in (full, small):
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) and len(name) <= 64, name
    assert full != small and small.endswith("-dev-q20-s100-r0")


# --- runs from hits -----------------------------------------------------------------------------


def test_a_ranking_keeps_the_api_order_maps_ids_and_counts_each_document_once():
    corpus_id_of = {"doc-a": "c1", "doc-b": "c2", "doc-c": "c3"}
    # Two chunks of doc-b; doc-x is not part of the corpus (someone else's document).
    ranked = metrics.ranking(["doc-b", "doc-x", "doc-b", "doc-a", "doc-c"], corpus_id_of)
    assert list(ranked) == ["c2", "not-in-corpus:doc-x", "c1", "c3"]
    assert list(ranked.values()) == [1.0, 1 / 2, 1 / 3, 1 / 4]
    assert metrics.ranking([], corpus_id_of) == {}


def test_the_api_order_survives_pytrec_eval_which_sorts_by_score_then_id():
    qrels = {"q": {"a": 1}}
    # The API ranks "b" (irrelevant) above "a": with equal scores trec_eval would put "b" first anyway
    # by id, so check the other way round too, where id order and API order disagree.
    assert metrics.mean(qrels, {"q": metrics.ranking(["b", "a"], {"a": "a", "b": "b"})})["mrr"] == 0.5
    assert metrics.mean(qrels, {"q": metrics.ranking(["a", "b"], {"a": "a", "b": "b"})})["mrr"] == 1.0


# --- measures through pytrec_eval ---------------------------------------------------------------


def test_a_perfect_run_scores_one_on_everything():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1, "z": 0}}
    run = {"q1": {"a": 1.0, "b": 0.5, "x": 0.3}, "q2": {"c": 1.0, "z": 0.5}}
    assert metrics.mean(qrels, run) == {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr": 1.0}


def test_the_relevant_document_at_rank_two():
    scores = metrics.mean({"q": {"a": 1}}, {"q": {"x": 1.0, "a": 0.5}})
    assert scores["mrr"] == 0.5
    assert scores["ndcg@10"] == pytest.approx(1 / math.log2(3))  # gain 1 discounted at rank 2
    assert scores["recall@10"] == 1.0


def test_recall_cuts_at_ten_and_a_hundred():
    qrels = {"q": {"a": 1, "b": 1}}
    ranked = ["a"] + [f"n{i}" for i in range(20)] + ["b"]  # b at rank 22
    scores = metrics.mean(qrels, {"q": metrics.ranking(ranked, {d: d for d in ranked})})
    assert (scores["recall@10"], scores["recall@100"], scores["mrr"]) == (0.5, 1.0, 1.0)


def test_a_query_with_no_hits_counts_as_zero_not_as_missing():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    perfect_on_one = {"q1": {"a": 1.0}}  # pytrec_eval alone would average over q1 only
    assert metrics.mean(qrels, perfect_on_one)["ndcg@10"] == 0.5
    assert metrics.mean(qrels, {"q1": {"a": 1.0}, "q2": {}})["mrr"] == 0.5
    assert metrics.mean(qrels, {})["recall@100"] == 0.0


def test_the_random_baseline_is_seeded_and_scores_low():
    corpus = [f"d{n}" for n in range(500)]
    qrels = {f"q{n}": {f"d{n}": 1} for n in range(50)}
    run = metrics.random_run(qrels, corpus, depth=100, seed=3)
    assert run == metrics.random_run(qrels, corpus, depth=100, seed=3)
    assert all(len(ranked) == 100 for ranked in run.values())
    assert metrics.mean(qrels, run)["ndcg@10"] < 0.1


# --- the API client, on a fake platform -----------------------------------------------------------


class FakePlatform:
    """The documents and search API, as far as the evaluation uses it."""

    def __init__(self) -> None:
        self.documents = {"old": {"id": "old", "status": "indexed", "metadata": {BEIR_ID: "c0"}}}
        self.created: list[dict] = []
        self.searches: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/collections":
            return httpx.Response(409, json={"error": {"code": "collection_exists", "message": "exists"}})
        if request.method == "GET" and request.url.path == "/v1/documents":
            items = [{**d, "updated_at": "2025-01-01T00:00:00Z"} for d in self.documents.values()]
            return httpx.Response(200, json={"items": items, "next_cursor": None})
        if request.method == "POST" and request.url.path == "/v1/documents":
            body = json.loads(request.content)
            if "refused" in body["text"]:
                return httpx.Response(
                    415, json={"error": {"code": "unsupported_media_type", "message": "no"}}
                )
            self.created.append(body)
            document_id = f"doc-{body['metadata'][BEIR_ID]}"
            status = "failed" if "broken" in body["text"] else "indexed"
            self.documents[document_id] = {"id": document_id, "status": status, "metadata": body["metadata"]}
            return httpx.Response(202, json={"document_id": document_id, "version": 1, "status": "received"})
        if request.method == "GET" and request.url.path.startswith("/v1/documents/"):
            document = self.documents[request.url.path.rsplit("/", 1)[1]]
            return httpx.Response(
                200, json={**document, "failure_code": "parse_failed", "failure_reason": "x"}
            )
        if request.url.path == "/v1/search":
            self.searches.append(json.loads(request.content))
            return httpx.Response(200, json={"hits": [{"document_id": "doc-c1"}, {"document_id": "old"}]})
        return httpx.Response(404)


def client(fake: FakePlatform) -> PlatformClient:
    return PlatformClient(httpx.Client(base_url="http://platform", transport=httpx.MockTransport(fake)))


def test_ingest_uploads_only_what_is_missing_and_maps_documents_to_corpus_ids():
    fake = FakePlatform()
    corpus = [
        CorpusDocument("c0", "Zero", "z"),
        CorpusDocument("c1", "One", "o"),
        CorpusDocument("c2", "", "b"),
    ]
    ingested = client(fake).ingest(corpus, collection="beir-x", allowed_groups=["g"], poll_interval_s=0)
    assert [body["metadata"][BEIR_ID] for body in fake.created] == ["c1", "c2"]  # c0 already indexed
    assert fake.created[0] == {
        "title": "One",
        "text": "# One\n\no",
        "content_type": "text/markdown",
        "allowed_groups": ["g"],
        "collection": "beir-x",
        "metadata": {BEIR_ID: "c1"},
    }
    assert fake.created[1]["title"] == "c2"  # no title: the id stands in (the API requires one)
    assert ingested.corpus_id_of == {"old": "c0", "doc-c1": "c1", "doc-c2": "c2"}
    assert (ingested.uploaded, ingested.reused, ingested.failed) == (2, 1, [])


def test_ingest_reports_documents_the_api_refused_or_the_pipeline_failed():
    fake = FakePlatform()
    corpus = [
        CorpusDocument("c0", "Zero", "z"),
        CorpusDocument("c1", "One", "broken"),
        CorpusDocument("c2", "Two", "refused"),
    ]
    ingested = client(fake).ingest(corpus, collection="beir-x", allowed_groups=["g"], poll_interval_s=0)
    assert [(o.path, o.status) for o in ingested.failed] == [("c2", "failed"), ("c1", "failed")]
    assert "parse_failed" in ingested.failed[1].reason and "415" in ingested.failed[0].reason
    assert ingested.corpus_id_of == {"old": "c0"}


def test_search_asks_for_documents_scoped_to_the_collection_with_fusion_in_hybrid_only():
    fake = FakePlatform()
    api = client(fake)
    fusion = {"k": 20, "keyword_weight": 0.5}
    searched = api.search("q", mode="hybrid", collection="beir-x", fusion=fusion)
    api.search("q", mode="keyword", collection="beir-x", fusion=fusion)
    assert searched.document_ids == ["doc-c1", "old"]
    assert fake.searches[0] == {
        "query": "q",
        "top_k": 100,
        "collection": "beir-x",
        "mode": "hybrid",
        "group_by": "document",
        "fusion": fusion,
    }
    assert "fusion" not in fake.searches[1]
