"""Model serving overhead: each model server over HTTP against the same model run in this process.

    .venv/bin/python -m bench.models [--limit 500] [--batch-sizes 8,32,128] [--backends torch,onnx] [--rounds 2]

Embedding: for each backend, starts sagemaker/embedding/serve.py on a free port (EMBEDDING_BACKEND set), then,
per batch size and round, alternates (a) the first `--limit` SciFact abstracts through the server in requests
of that many texts, one request at a time, and (b) the same texts encoded in this process:
`SentenceTransformer.encode(batch_size=...)` for torch, and for onnx the server's own `Embedder` (there is no
sentence-transformers ONNX backend here: it needs optimum, which does not install beside transformers 5).
Abstracts longer than the model's 256 tokens are cut to it on both sides (`"truncate": true`). Alternating
keeps the two sides under the same background load on a shared machine; the median round is reported.
Ratio = server texts/s / in-process texts/s (target ≥ 0.9 at the best batch size).

LLM: starts sagemaker/llm/serve.py and loads the same GGUF with the server's own `Generator` in this
process, then alternates the same short chat requests (a SciFact abstract as context) between the two:
time to first token and streamed text pieces per second, and the median TTFT overhead of going through
the server and the platform's client (target ≤ 50 ms). `--only llm` / `--only embedding` runs one half.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from ragline.local.harness import ModelServer

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact-dev" / "corpus.jsonl"
EMBEDDING_SERVER = REPO / "sagemaker" / "embedding" / "serve.py"
LLM_SERVER = REPO / "sagemaker" / "llm" / "serve.py"


def abstracts(limit: int) -> list[str]:
    with SCIFACT.open() as lines:
        records = [json.loads(line) for _, line in zip(range(limit), lines, strict=False)]
    return [f"{r['title']}\n{r['text']}" for r in records]


def load_serve(script: Path | None = None) -> Any:
    """serve.py is a standalone script (sagemaker/ is not a package): loaded from its path."""
    script = script or EMBEDDING_SERVER
    spec = importlib.util.spec_from_file_location(f"{script.parent.name}_serve", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def model_server(script: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """One of the sagemaker/*/serve.py servers on a free port, stopped on exit."""
    with ModelServer(script.parent.name, log, env=env) as server:
        yield server.url


def through_server(http: httpx.Client, url: str, texts: list[str], batch: int) -> list[float]:
    """Seconds per request, requests of `batch` texts sent one after the other."""
    seconds = []
    for start in range(0, len(texts), batch):
        body = {"inputs": texts[start : start + batch], "truncate": True}
        started = time.perf_counter()
        response = http.post(f"{url}/invocations", json=body)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
    return seconds


def in_process(backend: str, cache: Path) -> Callable[[list[str], int], object]:
    """The same model in this process: sentence-transformers for torch, the server's Embedder for onnx."""
    serve = load_serve()
    if backend == "torch":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(serve.resolve_model({}).target, device="cpu")
        return lambda texts, batch: model.encode(
            texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False
        )
    config = serve.ServerConfig.from_env({"EMBEDDING_BACKEND": "onnx", "ONNX_CACHE_DIR": str(cache)})
    embedder = serve.Embedder.load(config)
    return lambda texts, batch: [
        embedder.embed(embedder.tokenize(texts[s : s + batch], truncate=True), normalize=True)
        for s in range(0, len(texts), batch)
    ]


def embedding(
    limit: int = 500,
    batch_sizes: tuple[int, ...] = (8, 32, 128),
    backends: tuple[str, ...] = ("torch", "onnx"),
    rounds: int = 2,
) -> dict[str, Any]:
    texts = abstracts(limit)
    rows = []
    with tempfile.TemporaryDirectory() as scratch, httpx.Client(timeout=600) as http:
        cache = Path(scratch) / "onnx-cache"
        for backend in backends:
            env = {"EMBEDDING_BACKEND": backend, "ONNX_CACHE_DIR": str(cache), "LOG_LEVEL": "WARNING"}
            with model_server(EMBEDDING_SERVER, env, Path(scratch) / f"{backend}.log") as url:
                encode = in_process(backend, cache)
                through_server(http, url, texts[:16], 16)  # warm both sides up
                encode(texts[:16], 16)
                for batch in batch_sizes:
                    server_s, local_s, per_request = [], [], []
                    for _ in range(rounds):
                        requests = through_server(http, url, texts, batch)
                        server_s.append(sum(requests))
                        per_request.append(statistics.median(requests))
                        started = time.perf_counter()
                        encode(texts, batch)
                        local_s.append(time.perf_counter() - started)
                    server_rate = len(texts) / statistics.median(server_s)
                    local_rate = len(texts) / statistics.median(local_s)
                    rows.append(
                        {
                            "backend": backend,
                            "batch": batch,
                            "server_texts_per_s": round(server_rate, 1),
                            "in_process_texts_per_s": round(local_rate, 1),
                            "ratio": round(server_rate / local_rate, 2),
                            "ms_per_request": round(1000 * statistics.median(per_request)),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    return {"texts": len(texts), "rounds": rounds, "rows": rows}


# --------------------------------------------------------------------------------------------
# LLM
# --------------------------------------------------------------------------------------------

QUESTIONS = (
    "In two sentences, what does the passage find?",
    "Summarise the study's main result for a clinician.",
    "Which population was studied, and what was measured?",
)


def chat_requests(count: int) -> list[list[dict[str, str]]]:
    """What the answer flow sends, in miniature: an instruction, one abstract as context, a question."""
    return [
        [
            {"role": "system", "content": "Answer from the context only. Be brief."},
            {"role": "user", "content": f"Context:\n{text}\n\nQuestion: {QUESTIONS[n % len(QUESTIONS)]}"},
        ]
        for n, text in enumerate(abstracts(count))
    ]


def timed(events: Iterator[Any], is_text: Callable[[Any], bool]) -> tuple[float, float, int]:
    """(seconds to the first text, seconds to the end, text pieces) of one streamed generation."""
    started = time.perf_counter()
    first, pieces = None, 0
    for event in events:
        if is_text(event):
            pieces += 1
            if first is None:
                first = time.perf_counter() - started
    return (first if first is not None else float("nan")), time.perf_counter() - started, pieces


def llm(count: int = 6, max_tokens: int = 48, rounds: int = 2) -> dict[str, Any]:
    """Time to first token and tokens/s through the LLM server (HTTP, the platform's own client and
    stream parser) against the server's own Generator in this process, same requests, alternated
    request by request so both sides see the same background load."""
    from ragline.endpoints.llm import HttpLlmTransport, LlmClient, LlmDelta

    requests = chat_requests(count)
    serve = load_serve(LLM_SERVER)
    generator = serve.Generator(serve.resolve_model({}), n_ctx=2048, n_gpu_layers=0)
    served: list[tuple[float, float, int]] = []
    local: list[tuple[float, float, int]] = []
    with (
        tempfile.TemporaryDirectory() as scratch,
        model_server(LLM_SERVER, {"LOG_LEVEL": "WARNING"}, Path(scratch) / "llm.log") as url,
        httpx.Client(timeout=600) as http,
    ):
        client = LlmClient(HttpLlmTransport(http, url))

        def through_server(messages: list[dict[str, str]]) -> tuple[float, float, int]:
            events = client.stream(messages, max_tokens=max_tokens)
            return timed(events, lambda e: isinstance(e, LlmDelta))

        def here(messages: list[dict[str, str]]) -> tuple[float, float, int]:
            prompt = generator.prompt_tokens(messages)
            events = generator.generate(prompt, max_tokens=max_tokens, temperature=0.0, stop=[])
            return timed(events, lambda e: e["type"] == "token")

        through_server(requests[0]), here(requests[0])  # warm-up
        for _ in range(rounds):
            for messages in requests:
                served.append(through_server(messages))
                local.append(here(messages))

    def summary(runs: list[tuple[float, float, int]]) -> dict[str, float]:
        return {
            "ttft_ms": round(1000 * statistics.median(r[0] for r in runs)),
            "pieces_per_s": round(statistics.median(r[2] / (r[1] - r[0]) for r in runs if r[1] > r[0]), 1),
        }

    result = {"requests": len(served), "server": summary(served), "in_process": summary(local)}
    result["ttft_overhead_ms"] = round(
        1000 * statistics.median(s[0] - h[0] for s, h in zip(served, local, strict=True))
    )
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=500, help="SciFact abstracts")
    parser.add_argument("--batch-sizes", default="8,32,128", help="Texts per request, comma-separated")
    parser.add_argument("--backends", default="torch,onnx", help="Embedding server backends, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=["embedding", "llm"], help="Run one half")
    args = parser.parse_args()
    if args.only != "embedding":
        timing = llm(rounds=args.rounds)
        print(
            f"LLM: time to first token p50 {timing['server']['ttft_ms']} ms through the server, "
            f"{timing['in_process']['ttft_ms']} ms in process (overhead p50 {timing['ttft_overhead_ms']} ms, "
            f"target <= 50 ms); text pieces/s {timing['server']['pieces_per_s']} vs "
            f"{timing['in_process']['pieces_per_s']}"
        )
    if args.only == "llm":
        return
    result = embedding(
        args.limit,
        tuple(int(b) for b in args.batch_sizes.split(",")),
        tuple(args.backends.split(",")),
        args.rounds,
    )
    print("| Backend | Texts per request | Server texts/s | In-process texts/s | Ratio | ms per request |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in result["rows"]:
        print(
            f"| {row['backend']} | {row['batch']} | {row['server_texts_per_s']} | {row['in_process_texts_per_s']} "
            f"| {row['ratio']} | {row['ms_per_request']} |"
        )


if __name__ == "__main__":
    main()
