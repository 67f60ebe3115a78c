"""Updating a document on the real local platform, through HTTP only: PUT answers 202 with an operation
and the new version, the document-update state machine (the exported CDK definition, executed by
the moto server, its Lambda tasks sent to the platform's Lambda Invoke emulator) runs it, and
afterwards search finds the new text, not the old, and a user only in the old groups no longer sees
the document."""

from __future__ import annotations

import httpx
import pytest

from ragline.saga import UPDATE_STEPS
from tests.e2e.test_delete_saga import indexed_document
from tests.support.api import auth, wait_for_operation

pytestmark = pytest.mark.e2e

OLD_QUERY = "zephyrine relief valve lapped"
NEW_TEXT = """# Quillon gearbox service

The quillon gearbox on conveyor nine is flushed with amber oil every thirteen weeks.
"""
NEW_QUERY = "quillon gearbox flushed amber oil"


def hits(http: httpx.Client, headers: dict[str, str], query: str, document_id: str) -> int:
    response = http.post("/v1/search", headers=headers, json={"query": query, "mode": "keyword", "top_k": 20})
    assert response.status_code == 200, response.text
    return sum(hit["document_id"] == document_id for hit in response.json()["hits"])


def test_an_update_of_content_and_groups_switches_what_search_finds_and_who_sees_it(platform, http):
    carol = auth(platform.token("carol", ["maintenance", "logistics"]))
    mallory = auth(platform.token("mallory", ["maintenance"]))  # only in the old groups
    document_id = indexed_document(http, carol)
    assert hits(http, mallory, OLD_QUERY, document_id) > 0

    key = {"Idempotency-Key": f"update-{document_id}"}
    body = {"text": NEW_TEXT, "allowed_groups": ["logistics"], "title": "Quillon gearboxes"}
    accepted = http.put(f"/v1/documents/{document_id}", headers={**carol, **key}, json=body)
    assert accepted.status_code == 202, accepted.text
    operation = accepted.json()
    assert operation["kind"] == "update" and operation["version"] == 2
    location = accepted.headers["Location"]

    operation = wait_for_operation(http, location, carol, operation)
    assert operation["status"] == "succeeded", operation
    assert [step["name"] for step in operation["steps"]] == list(UPDATE_STEPS)

    document = http.get(f"/v1/documents/{document_id}", headers=carol).json()
    assert document["version"] == 2 and document["allowed_groups"] == ["logistics"]
    assert hits(http, carol, NEW_QUERY, document_id) > 0
    assert hits(http, carol, OLD_QUERY, document_id) == 0
    assert hits(http, mallory, NEW_QUERY, document_id) == 0
    assert hits(http, mallory, OLD_QUERY, document_id) == 0
    assert http.get(f"/v1/documents/{document_id}", headers=mallory).status_code == 404

    again = http.put(f"/v1/documents/{document_id}", headers={**carol, **key}, json=body)
    assert again.status_code == 202 and again.json()["operation_id"] == operation["operation_id"]
