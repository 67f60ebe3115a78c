"""Publishing and reading Ragline events. Adapters take their boto3 clients in the constructor."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from ragline.contracts import EventDetail, EventEnvelope, event_source

D = TypeVar("D", bound=EventDetail)


class PublishError(RuntimeError):
    pass


class EventBridgePublisher:
    def __init__(self, events_client: Any, bus_name: str) -> None:
        self._client = events_client
        self._bus = bus_name

    def publish(self, detail: EventDetail) -> None:
        response = self._client.put_events(
            Entries=[
                {
                    "EventBusName": self._bus,
                    "Source": event_source(detail),
                    "DetailType": detail.DETAIL_TYPE,
                    "Detail": detail.model_dump_json(),
                }
            ]
        )
        # put_events reports per-entry failures in a 200 response; botocore's retries never see them.
        if response.get("FailedEntryCount", 0):
            entry = response["Entries"][0]
            raise PublishError(f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}")


class SqsSender:
    """Point-to-point messages in the same envelope EventBridge uses, so consumers parse one shape."""

    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._client = sqs_client
        self._url = queue_url

    def send(self, detail: EventDetail) -> None:
        envelope = EventEnvelope[type(detail)].wrap(detail)  # type: ignore[misc]
        self._client.send_message(
            QueueUrl=self._url,
            MessageBody=envelope.model_dump_json(by_alias=True),
            MessageAttributes={
                "correlation_id": {"DataType": "String", "StringValue": detail.metadata.correlation_id}
            },
        )


def parse_envelope(body: str | dict[str, Any], detail_type: type[D]) -> EventEnvelope[D]:
    data = json.loads(body) if isinstance(body, str) else body
    return EventEnvelope[detail_type].model_validate(data)  # type: ignore[valid-type]
