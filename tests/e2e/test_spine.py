"""One document end to end through the real local platform: `ragline dev` in its own process (moto,
both real model servers, the gateway, the SQS pollers), driven only through the HTTP API."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.api import auth
from tests.support.sse import parse_sse

pytestmark = pytest.mark.e2e

RUNBOOK = """# Heliotrope operations runbook

## Credential rotation

The Heliotrope ingestion cluster rotates its database credentials every seventeen days.
Rotation is performed by the on-call engineer using the vault-rotate tool, and the old
credentials stay valid for one hour so running jobs can finish.

## Incident response

Page the storage team when replication lag exceeds ninety seconds.
"""

OTHER = """# Cafeteria menu

Lunch on Fridays is served from noon until two in the afternoon. Soup of the day is lentil.
"""


@pytest.fixture(scope="module")
def alice(platform) -> dict[str, str]:
    # Issued through the CLI, as the README tells a person to.
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragline.cli",
            "--state-dir",
            str(platform.state_dir),
            "token",
            "--user",
            "alice",
            "--groups",
            "engineering",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return auth(token)


@pytest.fixture(scope="module")
def bob(platform) -> dict[str, str]:
    return auth(platform.token("bob", ["sales"]))


def upload(http: httpx.Client, headers: dict[str, str], title: str, text: str, groups: list[str]) -> dict:
    response = http.post(
        "/v1/documents", headers=headers, json={"title": title, "text": text, "allowed_groups": groups}
    )
    assert response.status_code == 202, response.text
    return response.json()


def wait_indexed(
    http: httpx.Client, headers: dict[str, str], document_id: str, timeout_s: float = 90
) -> tuple[dict, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = http.get(f"/v1/documents/{document_id}", headers=headers)
        assert response.status_code == 200, response.text
        document = response.json()
        if not seen or seen[-1] != document["status"]:
            seen.append(document["status"])
        if document["status"] in ("indexed", "failed"):
            return document, seen
        time.sleep(0.1)
    pytest.fail(f"document {document_id} not indexed in {timeout_s}s; statuses seen: {seen}")


@pytest.fixture(scope="module")
def runbook(http, alice) -> dict:
    created = upload(http, alice, "Heliotrope runbook", RUNBOOK, ["engineering"])
    assert created["version"] == 1 and created["status"] == "received"
    document, seen = wait_indexed(http, alice, created["document_id"])
    document["correlation_id"] = created["correlation_id"]
    assert document["status"] == "indexed", document
    stages = ["received", "parsing", "chunked", "embedding", "indexed"]
    assert seen[-1] == "indexed" and set(seen) <= set(stages)
    assert [s for s in stages if s in seen] == seen  # polled statuses only ever move forwards
    assert list(document["stage_times"]) == stages  # every stage recorded, whatever polling saw
    assert document["chunk_count"] == document["indexed_count"] > 0
    upload(http, alice, "Cafeteria", OTHER, ["engineering"])
    return document


def test_one_correlation_id_follows_the_document_through_every_function(platform, runbook):
    services = set()
    for line in (platform.state_dir / "logs" / "platform.log").read_text().splitlines():
        if line.startswith("{") and runbook["correlation_id"] in line:
            record = json.loads(line)
            assert record["correlation_id"] == runbook["correlation_id"]
            services.add(record["service"])
    assert {"ingest-api", "ingest-worker", "index-worker", "ingest-status"} <= services


def test_uploaded_chunk_is_the_top_hit_for_a_query_taken_from_it(http, alice, runbook):
    response = http.post(
        "/v1/search",
        headers=alice,
        json={"query": "how often are the database credentials rotated", "top_k": 5},
    )
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits and hits[0]["document_id"] == runbook["id"]
    top = hits[0]
    assert "seventeen days" in top["text"]
    assert top["title"] == "Heliotrope runbook" and top["heading_path"][-1] == "Credential rotation"


def test_a_user_outside_the_groups_finds_nothing(http, bob, runbook):
    for mode in ("hybrid", "keyword", "vector"):
        response = http.post(
            "/v1/search", headers=bob, json={"query": "Heliotrope credentials", "mode": mode}
        )
        assert response.status_code == 200
        assert response.json()["hits"] == [], mode
    assert http.get(f"/v1/documents/{runbook['id']}", headers=bob).status_code == 404


def stream_answer(http: httpx.Client, headers: dict[str, str], question: str) -> list[tuple[str, dict]]:
    with http.stream(
        "POST",
        "/v1/answers",
        headers={**headers, "Accept": "text/event-stream"},
        json={"question": question, "max_tokens": 48},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(parse_sse(response.iter_lines()))


def test_answer_streams_tokens_then_cites_the_document(http, alice, runbook):
    events = stream_answer(http, alice, "How often does Heliotrope rotate its database credentials?")
    names = [name for name, _ in events]
    assert names.count("token") >= 2, names
    assert names[-2:] == ["citations", "done"] and "error" not in names
    cited = {c["document_id"] for c in events[-2][1]["citations"]}
    assert runbook["id"] in cited
    usage = events[-1][1]["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 48


def test_tokens_arrive_while_the_answer_is_still_being_generated(http, alice, runbook):
    """Read as a client reads a stream: each event timed as it arrives. A buffered response would
    deliver every token at once, after the last was generated."""
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    with http.stream(
        "POST",
        "/v1/answers",
        headers={**alice, "Accept": "text/event-stream"},
        # Not from the cache: a cached answer is replayed at once, which is the point of it.
        json={
            "question": "Describe how Heliotrope rotates its database credentials.",
            "max_tokens": 64,
            "cache": False,
        },
    ) as response:
        assert response.status_code == 200
        for name, _ in parse_sse(response.iter_lines()):
            arrivals.append((time.monotonic() - started, name))
    tokens = [at for at, name in arrivals if name == "token"]
    done = next(at for at, name in arrivals if name == "done")
    assert len(tokens) >= 8, arrivals
    # The model streams ~50-80 tokens/s here: 8+ tokens take 100 ms or more to generate, so the first
    # must have arrived clearly before the last rather than together with it.
    assert tokens[-1] - tokens[0] >= 0.05, arrivals
    assert tokens[0] < done


def test_answers_never_cite_what_the_user_cannot_see(http, bob, runbook):
    events = stream_answer(http, bob, "How often does Heliotrope rotate its database credentials?")
    citations = next(payload for name, payload in events if name == "citations")["citations"]
    assert runbook["id"] not in {c["document_id"] for c in citations}


def test_malformed_body_is_422_and_stores_nothing(http, alice):
    response = http.post(
        "/v1/documents", headers=alice, json={"title": "x", "text": "y", "allowed_groups": []}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    response = http.post("/v1/search", headers=alice, json={"query": "x", "top_k": 1000})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "method,path",
    [("POST", "/v1/documents"), ("GET", "/v1/documents/x"), ("POST", "/v1/search"), ("POST", "/v1/answers")],
)
def test_missing_token_is_401(http, method, path):
    response = http.request(method, path, json={})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


GLOSSARY = """# Tessellate furnace glossary

## Quenching

The tessellate furnace quenches every batch in brine for eleven minutes before inspection.
"""


def test_a_presigned_upload_through_the_local_s3_is_indexed_and_found(http, alice):
    data = GLOSSARY.encode()
    response = http.post(
        "/v1/documents",
        headers=alice,
        json={
            "title": "Tessellate glossary",
            "upload": True,
            "size_bytes": len(data),
            "content_type": "text/markdown",
            "allowed_groups": ["engineering"],
        },
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "awaiting_upload"
    # The bytes go straight to the local S3 (moto), not through the gateway.
    put = httpx.put(created["upload"]["url"], content=data, headers=created["upload"]["headers"], timeout=30)
    assert put.status_code == 200, put.text

    document, _ = wait_indexed(http, alice, created["document_id"])
    assert document["status"] == "indexed", document
    assert document["content_hash"] == hashlib.sha256(data).hexdigest()
    assert document["size_bytes"] == len(data)
    response = http.post(
        "/v1/search", headers=alice, json={"query": "how long is a batch quenched in brine", "top_k": 3}
    )
    assert response.status_code == 200, response.text
    top = response.json()["hits"][0]
    assert top["document_id"] == created["document_id"] and "eleven minutes" in top["text"]
