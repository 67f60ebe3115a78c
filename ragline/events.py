"""Publishing and reading Ragline events. Adapters take their boto3 clients in the constructor."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from ragline.contracts import EventDetail, EventEnvelope, event_source

D = TypeVar("D", bound=EventDetail)
MAX_PUT_EVENTS_ENTRIES = 10


class PublishError(RuntimeError):
    pass


class EventBridgePublisher:
    def __init__(self, events_client: Any, bus_name: str) -> None:
        self._client = events_client
        self._bus = bus_name

    def publish(self, detail: EventDetail) -> None:
        self.publish_many([detail])

    def publish_many(self, details: Sequence[EventDetail]) -> None:
        """PutEvents takes ten entries a call: a batch of events costs a tenth of the calls."""
        for start in range(0, len(details), MAX_PUT_EVENTS_ENTRIES):
            batch = details[start : start + MAX_PUT_EVENTS_ENTRIES]
            response = self._client.put_events(
                Entries=[
                    {
                        "EventBusName": self._bus,
                        "Source": event_source(detail),
                        "DetailType": detail.DETAIL_TYPE,
                        "Detail": detail.model_dump_json(),
                    }
                    for detail in batch
                ]
            )
            # put_events reports per-entry failures in a 200 response; botocore's retries never see them.
            if response.get("FailedEntryCount", 0):
                failed = [e for e in response["Entries"] if e.get("ErrorCode")]
                raise PublishError(
                    f"{len(failed)} of {len(batch)} events not published: "
                    f"{failed[0].get('ErrorCode')}: {failed[0].get('ErrorMessage')}"
                )


class SqsSender:
    """Point-to-point messages in the same envelope EventBridge uses, so consumers parse one shape."""

    MAX_DELAY_S = 900  # SQS's longest DelaySeconds

    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._client = sqs_client
        self._url = queue_url

    def send(self, detail: EventDetail, *, delay_s: int = 0) -> None:
        """`delay_s`: hidden from consumers for that long (SQS DelaySeconds, 0 to MAX_DELAY_S)."""
        if not 0 <= delay_s <= self.MAX_DELAY_S:
            raise ValueError(f"SQS delays a message 0 to {self.MAX_DELAY_S} s, not {delay_s}")
        envelope = EventEnvelope[type(detail)].wrap(detail)  # type: ignore[misc]
        self._client.send_message(
            QueueUrl=self._url,
            MessageBody=envelope.model_dump_json(by_alias=True),
            MessageAttributes={
                "correlation_id": {"DataType": "String", "StringValue": detail.metadata.correlation_id}
            },
            **({"DelaySeconds": delay_s} if delay_s else {}),
        )


def parse_envelope(body: str | dict[str, Any], detail_type: type[D]) -> EventEnvelope[D]:
    data = json.loads(body) if isinstance(body, str) else body
    return EventEnvelope[detail_type].model_validate(data)  # type: ignore[valid-type]
