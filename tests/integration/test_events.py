"""EventBridgePublisher against moto's bus: batches of events cost a tenth of the calls, and a
per-entry failure (reported in a 200 response, which botocore's retries never see) raises."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ragline.contracts import EventMetadata, IndexingStarted
from ragline.events import EventBridgePublisher, PublishError

from .conftest import OBSERVER_QUEUE, AwsPlatform


def started(n: int) -> IndexingStarted:
    return IndexingStarted(
        metadata=EventMetadata(correlation_id=f"corr-{n}", idempotency_key=f"doc{n}:v1:indexing-started"),
        document_id=f"doc{n}",
        version=1,
        chunk_count=n + 1,
    )


class CountingEvents:
    """The real moto client, with its put_events calls counted."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.entries_per_call: list[int] = []

    def put_events(self, **kwargs: Any) -> Any:
        self.entries_per_call.append(len(kwargs["Entries"]))
        return self._client.put_events(**kwargs)


def test_many_events_go_out_ten_a_call_and_all_arrive(aws_platform: AwsPlatform) -> None:
    p = aws_platform
    events = CountingEvents(p.events)
    EventBridgePublisher(events, p.settings.event_bus).publish_many([started(n) for n in range(23)])

    assert events.entries_per_call == [10, 10, 3]
    bodies = [json.loads(m["Body"]) for m in p.receive(OBSERVER_QUEUE, expected=23, attempts=10)]
    assert sorted(b["detail"]["document_id"] for b in bodies) == sorted(f"doc{n}" for n in range(23))


def test_an_entry_the_bus_refuses_raises_with_its_reason(aws_platform: AwsPlatform) -> None:
    class RefusesTheSecond:
        def put_events(self, **kwargs: Any) -> Any:
            entries = [{"EventId": "e1"}, {"ErrorCode": "InternalFailure", "ErrorMessage": "try later"}]
            return {"FailedEntryCount": 1, "Entries": entries[: len(kwargs["Entries"])]}

    with pytest.raises(PublishError, match="1 of 2 events not published: InternalFailure: try later"):
        EventBridgePublisher(RefusesTheSecond(), "bus").publish_many([started(0), started(1)])
