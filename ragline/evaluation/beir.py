"""BEIR datasets: `corpus.jsonl` (_id, title, text), `queries.jsonl` (_id, text) and
`qrels/<split>.tsv` (a `query-id corpus-id score` header, then one judgement a line)."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

Qrels = dict[str, dict[str, int]]  # query id → corpus id → relevance (0: judged not relevant)


@dataclass(frozen=True)
class CorpusDocument:
    id: str
    title: str
    text: str

    def markdown(self) -> str:
        """The document as uploaded: the title as its heading, then the abstract."""
        return f"# {self.title}\n\n{self.text}" if self.title else self.text or self.id


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: dict[str, CorpusDocument]  # in file order
    queries: dict[str, str]  # in file order; only queries with at least one relevant judgement
    qrels: Qrels

    def subset(self, queries: int | None = None, corpus_sample: int | None = None, seed: int = 0) -> Dataset:
        """The first `queries` queries (file order) and their judgements; with `corpus_sample`, a corpus of
        every document they judge plus that many others drawn with a seeded RNG, so a rerun with the
        same arguments evaluates (and can reuse the index of) exactly the same documents."""
        kept = dict(list(self.queries.items())[:queries]) if queries is not None else dict(self.queries)
        qrels = {qid: self.qrels[qid] for qid in kept}
        corpus = self.corpus
        if corpus_sample is not None:
            judged = {doc for judgements in qrels.values() for doc in judgements if doc in self.corpus}
            others = [doc for doc in self.corpus if doc not in judged]
            drawn = set(random.Random(seed).sample(others, min(corpus_sample, len(others))))
            corpus = {doc: d for doc, d in self.corpus.items() if doc in judged or doc in drawn}
        return Dataset(self.name, corpus, kept, qrels)


def load(folder: Path, split: str = "test") -> Dataset:
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"no {qrels_path} (splits here: {', '.join(available) or 'none'})")
    qrels = read_qrels(qrels_path)
    corpus = {}
    for record in _jsonl(folder / "corpus.jsonl"):
        doc = CorpusDocument(str(record["_id"]), record.get("title") or "", record.get("text") or "")
        corpus[doc.id] = doc
    # As BEIR does: a query is evaluated when the split judges some document relevant to it.
    relevant = {qid for qid, judgements in qrels.items() if any(score > 0 for score in judgements.values())}
    queries = {
        str(record["_id"]): record["text"]
        for record in _jsonl(folder / "queries.jsonl")
        if str(record["_id"]) in relevant
    }
    return Dataset(folder.resolve().name, corpus, queries, {qid: qrels[qid] for qid in queries})


def read_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    with path.open(newline="") as lines:
        rows = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None or header[:1] != ["query-id"]:
            raise ValueError(f"{path}: expected a `query-id corpus-id score` header, got {header}")
        for row in rows:
            if row:
                query_id, corpus_id, score = row[0], row[1], row[2]
                qrels.setdefault(query_id, {})[corpus_id] = int(score)
    return qrels


def _jsonl(path: Path) -> Iterator[dict]:
    with path.open() as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)
