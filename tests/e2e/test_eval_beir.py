"""`ragline eval beir` against the running local platform, on a SciFact subset bundled in tests/data:
the report covers every mode, measure and query, each mode beats a random ranking of the same corpus
by far, and a rerun on the same collection skips ingestion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ragline.evaluation import metrics
from ragline.evaluation.beir import load

pytestmark = pytest.mark.e2e

# 15 SciFact dev claims, their judged abstracts and 60 others (tests/data/scifact-subset/README.md).
SCIFACT = Path(__file__).resolve().parents[1] / "data" / "scifact-subset"
QUERIES = 15


def evaluate(platform, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragline.cli",
            "eval",
            "beir",
            str(SCIFACT),
            "--split",
            "dev",
            "--url",
            platform.base_url,
            "--token",
            platform.token("eval", ["beir-eval"]),
            "--json",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ndcg@10" in done.stdout and "hybrid" in done.stdout, done.stdout  # the table
    return json.loads(out.read_text())


def test_every_mode_clearly_beats_a_random_ranking_and_a_rerun_reuses_the_index(platform, tmp_path):
    dataset = load(SCIFACT, "dev")
    report = evaluate(platform, tmp_path)

    assert report["queries"] == QUERIES and report["corpus"] == len(dataset.corpus)
    assert report["uploaded"] == len(dataset.corpus) and report["reused"] == 0
    # The best of a few random rankings of the same corpus, scored by pytrec_eval like the modes.
    chance = max(
        metrics.mean(dataset.qrels, metrics.random_run(dataset.queries, list(dataset.corpus), seed=s))[
            "ndcg@10"
        ]
        for s in range(5)
    )
    assert chance < 0.3
    assert set(report["modes"]) == {"keyword", "vector", "hybrid"}
    for mode, result in report["modes"].items():
        assert set(result["metrics"]) == set(metrics.MEASURES), mode
        assert set(report["per_query"][mode]) == set(dataset.queries), mode  # every query evaluated
        assert result["queries_with_hits"] == QUERIES, mode
        assert result["foreign_hits"] == 0 and result["degraded"] == 0, mode  # only this collection
        assert result["latency_p50_ms"] > 0, mode
        # SciFact subsets score about 0.85 to 0.95: wrong documents, a wrong mapping or an empty run
        # land near chance.
        assert result["metrics"]["ndcg@10"] > chance + 0.4, (mode, result["metrics"], chance)
        assert result["metrics"]["recall@100"] >= 0.8, (mode, result["metrics"])

    # Same subset, same collection: nothing is uploaded again; fusion parameters reach hybrid search.
    again = evaluate(platform, tmp_path, "--modes", "hybrid", "--fusion-k", "10", "--keyword-weight", "0.5")
    assert (again["uploaded"], again["reused"]) == (0, len(dataset.corpus))
    assert again["fusion"] == {"k": 10, "keyword_weight": 0.5}
    assert list(again["modes"]) == ["hybrid"]
    assert again["modes"]["hybrid"]["metrics"]["ndcg@10"] > chance + 0.4
