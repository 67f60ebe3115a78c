"""The platform as the evaluation sees it: only the public API, so what is measured is what users get.

Documents go in as Markdown with their BEIR id in `metadata.beir_id`, so a collection's listing
maps document ids back to corpus ids on a later run against the same platform (titles need not be
unique, ids are). Waiting reuses the bulk uploader's per-document check."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TextIO

import httpx

from ragline.bulk import BulkIngester, Outcome
from ragline.evaluation.beir import CorpusDocument

BEIR_ID = "beir_id"
MAX_TITLE = 512  # CreateDocumentRequest.title


class ApiError(RuntimeError):
    pass


@dataclass
class Ingested:
    corpus_id_of: dict[str, str]  # document id → corpus id, for every indexed document of the corpus
    uploaded: int = 0
    reused: int = 0
    seconds: float = 0.0
    failed: list[Outcome] = field(default_factory=list)
    merged: list[tuple[str, str]] = field(default_factory=list)  # (corpus id, the one whose document it got)


@dataclass(frozen=True)
class Searched:
    document_ids: list[str]
    seconds: float
    degraded: bool


class PlatformClient:
    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def ensure_collection(self, name: str, description: str) -> None:
        """Creates the collection with the deployment's default chunking; one that exists is kept as is."""
        response = self._http.post("/v1/collections", json={"name": name, "description": description})
        if response.status_code == 409 and _code(response) == "collection_exists":
            return
        _raise_for(response, f"creating collection {name}")

    def corpus_documents(self, collection: str) -> dict[str, dict]:
        """corpus id → its document in the collection (the latest one, when several claim it)."""
        found: dict[str, dict] = {}
        for document in self._documents(collection):
            corpus_id = document.get("metadata", {}).get(BEIR_ID)
            if corpus_id is not None:
                previous = found.get(str(corpus_id))
                if previous is None or document["updated_at"] > previous["updated_at"]:
                    found[str(corpus_id)] = document
        return found

    def ingest(
        self,
        documents: list[CorpusDocument],
        *,
        collection: str,
        allowed_groups: list[str],
        concurrency: int = 4,
        poll_interval_s: float = 1.0,
        index_timeout_s: float = 7200,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> Ingested:
        """Uploads what the collection does not already hold indexed, then waits until every upload is
        indexed or failed. `progress(stage, done, total)` is called as uploads and indexing advance."""
        started = time.monotonic()
        listed = self.corpus_documents(collection)
        present = {cid: d["id"] for cid, d in listed.items() if d["status"] == "indexed"}
        result = Ingested(corpus_id_of={})
        todo = []
        for doc in documents:
            if doc.id in present:
                result.corpus_id_of.setdefault(present[doc.id], doc.id)
                result.reused += 1
            else:
                todo.append(doc)
        report = progress or (lambda *_: None)
        checker = BulkIngester(self._http, allowed_groups=allowed_groups, collection=collection)

        def upload(doc: CorpusDocument) -> Outcome:
            text = doc.markdown()
            outcome = Outcome(path=doc.id, sha256=hashlib.sha256(text.encode()).hexdigest())
            body = {
                "title": (doc.title or doc.id)[:MAX_TITLE],
                "text": text,
                "content_type": "text/markdown",
                "allowed_groups": allowed_groups,
                "collection": collection,
                "metadata": {BEIR_ID: doc.id},
            }
            try:
                response = self._http.post("/v1/documents", json=body)
            except httpx.HTTPError as exc:
                outcome.status, outcome.reason = "failed", f"upload failed: {exc}"
                return outcome
            if response.status_code >= 400:
                outcome.status, outcome.reason = "failed", f"{response.status_code} {response.text[:300]}"
            else:
                # Identical bytes already in the collection come back as that document (deduplicated):
                # a re-run finds its interrupted uploads this way and just waits for them.
                outcome.document_id, outcome.status = response.json()["document_id"], "uploaded"
            return outcome

        in_flight: list[Outcome] = []
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for done, outcome in enumerate(pool.map(upload, todo), start=1):
                (in_flight if outcome.status == "uploaded" else result.failed).append(outcome)
                report("upload", done, len(todo))
            result.uploaded = len(in_flight)
            deadline = time.monotonic() + index_timeout_s
            waiting = list(in_flight)
            while waiting:
                if time.monotonic() > deadline:
                    for outcome in waiting:
                        outcome.status = "failed"
                        outcome.reason = f"not indexed within {index_timeout_s:.0f}s"
                    result.failed += waiting
                    break
                # Documents finish roughly in upload order: look at the oldest few each round.
                for outcome in pool.map(checker.check, waiting[: concurrency * 4]):
                    if outcome.status != "uploaded":
                        waiting.remove(outcome)
                        if outcome.status == "failed":
                            result.failed.append(outcome)
                report("index", len(in_flight) - len(waiting), len(in_flight))
                if waiting:
                    time.sleep(poll_interval_s)
        for outcome in in_flight:
            if outcome.status == "indexed":
                holder = result.corpus_id_of.setdefault(outcome.document_id, outcome.path)
                if holder != outcome.path:
                    result.merged.append((outcome.path, holder))
        result.seconds = time.monotonic() - started
        return result

    def search(
        self, query: str, *, mode: str, collection: str, top_k: int = 100, fusion: dict | None = None
    ) -> Searched:
        body: dict = {
            "query": query[:2000],
            "top_k": top_k,
            "collection": collection,
            "mode": mode,
            "group_by": "document",  # the measures are per document, not per chunk
        }
        if fusion and mode == "hybrid":  # the contract: fusion parameters are for hybrid mode only
            body["fusion"] = fusion
        started = time.perf_counter()
        response = self._http.post("/v1/search", json=body)
        seconds = time.perf_counter() - started
        _raise_for(response, f"{mode} search")
        answer = response.json()
        return Searched([hit["document_id"] for hit in answer["hits"]], seconds, bool(answer.get("degraded")))

    def _documents(self, collection: str) -> Iterator[dict]:
        cursor = None
        while True:
            params: dict = {"collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            response = self._http.get("/v1/documents", params=params)
            _raise_for(response, f"listing collection {collection}")
            page = response.json()
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _code(response: httpx.Response) -> str | None:
    try:
        return response.json().get("error", {}).get("code")
    except ValueError:
        return None


def _raise_for(response: httpx.Response, doing: str) -> None:
    if response.status_code >= 400:
        raise ApiError(f"{doing}: HTTP {response.status_code}: {response.text[:500]}")


def print_progress(stream: TextIO = sys.stderr, every_s: float = 10.0) -> Callable[[str, int, int], None]:
    """A progress line per stage at most every `every_s` (and at the end): readable in a log too."""
    last: dict[str, float] = {}

    def show(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last.get(stage, 0.0) >= every_s:
            last[stage] = now
            print(f"  {stage}: {done}/{total}", file=stream, flush=True)

    return show
