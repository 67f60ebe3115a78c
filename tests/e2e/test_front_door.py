"""The front door of the real local platform (`ragline dev`), as a client meets it: scopes from the
CLI's tokens and from a machine client's client-credentials grant, and a tier's limits on an API key
made with `ragline api-key`."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import httpx
import pytest

from ragline.tiers import load_tiers
from tests.support.api import auth, upload_indexed

pytestmark = pytest.mark.e2e


def cli(platform, *args: str) -> str:
    command = [sys.executable, "-m", "ragline.cli", "--state-dir", str(platform.state_dir), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def test_a_token_reaches_only_the_routes_its_scopes_grant(platform, http: httpx.Client):
    searcher = auth(cli(platform, "token", "--user", "sam", "--groups", "eng", "--scopes", "search"))
    assert http.post("/v1/search", headers=searcher, json={"query": "anything"}).status_code == 200
    for method, path, body in (
        ("GET", "/v1/documents", None),
        ("POST", "/v1/documents", {"title": "t", "text": "x", "allowed_groups": ["eng"]}),
        ("POST", "/v1/answers", {"question": "anything?"}),
    ):
        refused = http.request(method, path, headers=searcher, json=body)
        assert refused.status_code == 401, (method, path, refused.text)  # as API Gateway answers
        assert refused.json()["error"]["code"] == "unauthorized"


def test_a_machine_client_gets_its_token_with_client_credentials(platform, http: httpx.Client):
    registered = dict(
        line.split("=", 1)
        for line in cli(platform, "client", "--name", "reporter", "--scopes", "documents:read").splitlines()
    )
    granted = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "ragline/documents:read"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert granted.status_code == 200, granted.text
    machine = auth(granted.json()["access_token"])
    assert http.get("/v1/documents", headers=machine).status_code == 200
    assert http.post("/v1/search", headers=machine, json={"query": "x"}).status_code == 401
    wider = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "ragline/documents:write"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


def machine_token(platform, http: httpx.Client, name: str, *options: str) -> dict[str, str]:
    registered = dict(
        line.split("=", 1) for line in cli(platform, "client", "--name", name, *options).splitlines()
    )
    granted = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert granted.status_code == 200, granted.text
    return auth(granted.json()["access_token"])


def test_a_machine_sees_the_documents_of_its_groups_in_its_tenant_only(platform, http: httpx.Client):
    scopes = ("--scopes", "documents:read", "documents:write", "search")
    writer = machine_token(platform, http, "importer", *scopes, "--groups", "ledger", "--tenant", "acme")
    document_id = upload_indexed(
        http, writer, "Quarterly ledger", "The osprey ledger closed in March.", ["ledger"]
    )

    def found(headers: dict[str, str]) -> bool:
        response = http.post("/v1/search", headers=headers, json={"query": "osprey ledger"})
        assert response.status_code == 200, response.text
        return document_id in {hit["document_id"] for hit in response.json()["hits"]}

    assert found(writer)
    assert not found(machine_token(platform, http, "no-groups", *scopes, "--tenant", "acme"))
    assert not found(
        machine_token(platform, http, "elsewhere", *scopes, "--groups", "ledger", "--tenant", "other")
    )
    # A person of the same group and tenant sees what the machine wrote.
    assert found(auth(platform.token("lee", ["ledger"], tenant="acme")))


def test_an_api_key_gets_its_tiers_burst_then_429_with_retry_after(platform, http: httpx.Client):
    free = load_tiers()["free"]
    key = cli(platform, "api-key", "--tier", "free")
    headers = {**auth(platform.token("kim", ["eng"])), "x-api-key": key}
    started, statuses = time.monotonic(), []
    while 429 not in statuses and len(statuses) < free.burst + 20:
        throttled = http.get("/v1/collections", headers=headers)
        statuses.append(throttled.status_code)
    elapsed = time.monotonic() - started
    # The whole burst passes, then only what the bucket refilled meanwhile (rate_per_second).
    assert statuses[: free.burst] == [200] * free.burst
    assert statuses[-1] == 429, statuses
    assert statuses.count(200) <= free.burst + math.ceil(elapsed * free.rate_per_second)
    assert throttled.json()["error"]["code"] == "throttled"
    assert int(throttled.headers["retry-after"]) >= 1
    forged = {**headers, "x-api-key": key[:-1] + ("A" if key[-1] != "A" else "B")}
    assert http.get("/v1/collections", headers=forged).json()["error"]["code"] == "invalid_api_key"
