"""Webhooks from the real local platform (`ragline dev`): a subscription made through the API, a
document uploaded through the API, and its events POSTed, signed, to a receiver on 127.0.0.1, with a
failed attempt retried (the platform runs with the test-only loopback setting and a 1 s backoff)."""

from __future__ import annotations

import json
import time

import pytest

from functions.notify.domain.signing import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from tests.support.webhooks import webhook_receiver

pytestmark = pytest.mark.e2e


def test_a_documents_events_reach_a_subscribed_receiver_signed_and_retried(platform, http) -> None:
    headers = {"Authorization": f"Bearer {platform.token('wanda', ['ops'])}"}
    with webhook_receiver() as receiver:
        receiver.statuses = [503]  # the first attempt fails; the retry succeeds
        created = http.post(
            "/v1/subscriptions",
            json={"url": receiver.url, "event_types": ["DocumentUploaded", "DocumentIndexed"]},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        subscription = created.json()

        document = http.post(
            "/v1/documents",
            json={
                "title": "Pager",
                "text": "# Pager\n\nThe pager rotates weekly.",
                "allowed_groups": ["ops"],
            },
            headers=headers,
        )
        assert document.status_code == 202, document.text
        document_id = document.json()["document_id"]

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            types = [json.loads(r.body)["detail-type"] for r in receiver.received]
            if types.count("DocumentIndexed") >= 1 and "DocumentUploaded" in types[1:]:
                break
            time.sleep(0.5)
        received = receiver.received

        now = int(time.time())
        assert all(
            verify(subscription["secret"], r.headers[SIGNATURE_HEADER.lower()], r.body, now=now)
            for r in received
        )
        bodies = [json.loads(r.body) for r in received]
        assert {(b["detail-type"], b["detail"]["document_id"]) for b in bodies} == {
            ("DocumentUploaded", document_id),
            ("DocumentIndexed", document_id),
        }
        # the failed first attempt came again under the same delivery id
        first = received[0].headers[DELIVERY_HEADER.lower()]
        assert [r.headers[DELIVERY_HEADER.lower()] for r in received].count(first) == 2

        listed = http.get(f"/v1/subscriptions/{subscription['subscription_id']}", headers=headers).json()
        assert (listed["failed_attempts"], listed["consecutive_failures"]) == (1, 0)
        assert (
            http.delete(f"/v1/subscriptions/{subscription['subscription_id']}", headers=headers).status_code
            == 204
        )
