"""The spine's figures on this machine: upload → indexed, search through the gateway, time to the
first answer token. Starts `ragline dev` on free ports and uses SciFact abstracts as documents.

    .venv/bin/python -m bench.spine [--docs 20] [--queries 30] [--answers 5]

Absolute times are noisy on a shared 2-core machine, so search is also reported as a ratio against
a baseline run in this process: the same queries through the same SearchService code, with the
same embedding server, straight on the index the platform wrote (no gateway, no Lambda Invoke).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from ragline.local.harness import running_platform

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact-dev"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(path: Path, limit: int) -> list[dict]:
    with path.open() as lines:
        return [json.loads(line) for _, line in zip(range(limit), lines, strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--answers", type=int, default=5)
    args = parser.parse_args()
    docs = load(SCIFACT / "corpus.jsonl", args.docs)
    queries = [q["text"] for q in load(SCIFACT / "queries.jsonl", args.queries)]

    with tempfile.TemporaryDirectory() as state, running_platform(Path(state)) as platform:
        headers = {"Authorization": f"Bearer {platform.token('bench', ['research'])}"}
        http = httpx.Client(base_url=platform.base_url, headers=headers, timeout=120)

        to_indexed = []
        for doc in docs:
            started = time.perf_counter()
            created = http.post(
                "/v1/documents",
                json={"title": doc["title"], "text": doc["text"], "allowed_groups": ["research"]},
            ).json()
            while http.get(f"/v1/documents/{created['document_id']}").json()["status"] not in (
                "indexed",
                "failed",
            ):
                time.sleep(0.02)
            to_indexed.append(time.perf_counter() - started)

        gateway = []
        for query in queries:
            started = time.perf_counter()
            response = http.post("/v1/search", json={"query": query, "top_k": 5})
            gateway.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text

        baseline = in_process_search(platform, queries)

        first_token, total = [], []
        for query in queries[: args.answers]:
            started = time.perf_counter()
            first = None
            with http.stream("POST", "/v1/answers", json={"question": query, "max_tokens": 64}) as response:
                for line in response.iter_lines():
                    if first is None and line.startswith("event: token"):
                        first = time.perf_counter() - started
            first_token.append(first or float("nan"))
            total.append(time.perf_counter() - started)

    ms = 1000
    print(f"documents: {len(docs)} SciFact abstracts; queries: {len(queries)}; answers: {len(first_token)}")
    print(
        f"upload -> indexed   p50 {statistics.median(to_indexed) * ms:7.0f} ms   p95 {percentile(to_indexed, 0.95) * ms:7.0f} ms"
    )
    print(
        f"search via gateway  p50 {statistics.median(gateway) * ms:7.1f} ms   p95 {percentile(gateway, 0.95) * ms:7.1f} ms"
    )
    print(f"search in-process   p50 {statistics.median(baseline) * ms:7.1f} ms   (baseline)")
    print(
        f"gateway / in-process (p50 ratio): {statistics.median(gateway) / statistics.median(baseline):.2f}x"
    )
    print(
        f"first answer token  p50 {statistics.median(first_token) * ms:7.0f} ms   whole answer p50 {statistics.median(total) * ms:7.0f} ms"
    )


def in_process_search(platform, queries: list[str]) -> list[float]:
    """The baseline: retrieve's own service over the platform's index and embedding server."""
    from functions.retrieve.wiring import build
    from ragline.contracts import Principal, SearchRequest
    from ragline.settings import Settings

    settings = Settings(
        search_backend="lance",
        lance_path=str(platform.state_dir.resolve() / "index"),
        embedding_backend="http",
        embedding_endpoint=f"http://127.0.0.1:{platform.ports['embedding-port']}",
    )
    service = build(settings)
    principal = Principal(user_id="bench", groups=frozenset({"research"}))
    timings = []
    for query in queries:
        started = time.perf_counter()
        service.search(principal, SearchRequest(query=query, top_k=5))
        timings.append(time.perf_counter() - started)
    return timings


if __name__ == "__main__":
    main()
