"""Calls end-to-end tests make through the platform's HTTP API."""

from __future__ import annotations

import time

import httpx


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
