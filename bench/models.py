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
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from ragline.local.harness import free_port

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact-dev" / "corpus.jsonl"
EMBEDDING_SERVER = REPO / "sagemaker" / "embedding" / "serve.py"


def abstracts(limit: int) -> list[str]:
    with SCIFACT.open() as lines:
        records = [json.loads(line) for _, line in zip(range(limit), lines, strict=False)]
    return [f"{r['title']}\n{r['text']}" for r in records]


def load_serve() -> Any:
    """serve.py is a standalone script (sagemaker/ is not a package): loaded from its path."""
    spec = importlib.util.spec_from_file_location("embedding_serve", EMBEDDING_SERVER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def embedding_server(env: dict[str, str], log: Path, ready_timeout_s: float = 300) -> Iterator[str]:
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(EMBEDDING_SERVER), "--port", str(port)],
            env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"embedding server exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedding server not ready in {ready_timeout_s}s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


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
            with embedding_server(env, Path(scratch) / f"{backend}.log") as url:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=500, help="SciFact abstracts")
    parser.add_argument("--batch-sizes", default="8,32,128", help="Texts per request, comma-separated")
    parser.add_argument("--backends", default="torch,onnx", help="Embedding server backends, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
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
