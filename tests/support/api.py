"""Calls end-to-end tests make through the platform's HTTP API."""

from __future__ import annotations

import time

import httpx


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload_indexed(
    http: httpx.Client, headers: dict[str, str], title: str, text: str, groups: list[str], **body
) -> str:
    """Upload an inline document and wait until it is searchable; returns its id."""
    response = http.post(
        "/v1/documents",
        json={"title": title, "text": text, "allowed_groups": groups, **body},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    document_id = response.json()["document_id"]
    deadline = time.monotonic() + 120
    while (status := http.get(f"/v1/documents/{document_id}", headers=headers).json()["status"]) != "indexed":
        assert status != "failed" and time.monotonic() < deadline, status
        time.sleep(0.1)
    return document_id


def wait_for_operation(
    http: httpx.Client, location: str, headers: dict[str, str], operation: dict, timeout: float = 90
) -> dict:
    """Poll an operation (its Location) until it succeeded or failed, or `timeout` passed; returns
    the last state seen, for the caller to judge."""
    deadline = time.monotonic() + timeout
    while operation["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        polled = http.get(location, headers=headers)
        assert polled.status_code == 200, polled.text
        operation = polled.json()
    return operation
