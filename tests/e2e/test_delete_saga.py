"""Deleting a document on the real local platform, through HTTP only: DELETE answers 202 with an
operation, the document-delete state machine (the exported CDK definition, executed by the moto
server, its Lambda tasks sent to the platform's Lambda Invoke emulator) runs it, and afterwards the
document is 404, search finds none of its chunks and the operation says succeeded with every step."""

from __future__ import annotations

import uuid

import httpx
import pytest

from ragline.saga import DELETE_STEPS
from tests.support.api import auth, upload_indexed, wait_for_operation

pytestmark = pytest.mark.e2e

TEXT = """# Zephyrine valve maintenance

The zephyrine relief valve on pump seven is lapped every forty-one days by the night shift.
"""
QUERY = "zephyrine relief valve lapped"


def indexed_document(http: httpx.Client, headers: dict[str, str]) -> str:
    # A line of its own per upload: identical content would be deduplicated onto another test's document.
    text = f"{TEXT}\nWork order {uuid.uuid4().hex}.\n"
    return upload_indexed(http, headers, "Zephyrine valves", text, ["maintenance"])


def hits(http: httpx.Client, headers: dict[str, str], document_id: str) -> int:
    response = http.post("/v1/search", headers=headers, json={"query": QUERY, "mode": "keyword", "top_k": 20})
    assert response.status_code == 200, response.text
    return sum(hit["document_id"] == document_id for hit in response.json()["hits"])


def test_delete_runs_the_saga_to_the_end_and_a_retry_starts_nothing_new(platform, http):
    carol = auth(platform.token("carol", ["maintenance"]))
    document_id = indexed_document(http, carol)
    assert hits(http, carol, document_id) > 0

    key = {"Idempotency-Key": f"delete-{document_id}"}
    accepted = http.delete(f"/v1/documents/{document_id}", headers={**carol, **key})
    assert accepted.status_code == 202, accepted.text
    operation = accepted.json()
    assert operation["kind"] == "delete" and operation["document_id"] == document_id
    assert operation["status"] in ("pending", "running")
    location = accepted.headers["Location"]
    assert location == f"/v1/operations/{operation['operation_id']}"

    operation = wait_for_operation(http, location, carol, operation, timeout=60)
    assert operation["status"] == "succeeded", operation
    assert [step["name"] for step in operation["steps"]] == list(DELETE_STEPS)
    assert operation["error"] is None and operation["current_step"] is None

    assert http.get(f"/v1/documents/{document_id}", headers=carol).status_code == 404
    assert hits(http, carol, document_id) == 0

    # The same request again: the same operation, nothing new started.
    again = http.delete(f"/v1/documents/{document_id}", headers={**carol, **key})
    assert again.status_code == 202, again.text
    assert again.json()["operation_id"] == operation["operation_id"]
    assert again.json()["status"] == "succeeded"
    # Without the key, the document is simply gone; and the operation is the requester's alone.
    assert http.delete(f"/v1/documents/{document_id}", headers=carol).status_code == 404
    dave = auth(platform.token("dave", ["maintenance"]))
    assert http.get(location, headers=dave).status_code == 404


def test_a_document_the_caller_cannot_see_cannot_be_deleted(platform, http):
    carol = auth(platform.token("carol", ["maintenance"]))
    document_id = indexed_document(http, carol)
    erin = auth(platform.token("erin", ["sales"]))
    assert http.delete(f"/v1/documents/{document_id}", headers=erin).status_code == 404
    assert http.get(f"/v1/documents/{document_id}", headers=carol).json()["status"] == "indexed"
