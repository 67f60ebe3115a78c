"""Every event a test makes a producer publish, checked against the committed catalogue
(docs/events/<Event>.json): a queue of its own receives everything ragline.* puts on the bus, and
`violations()` drains it after the test. The integration tests' `aws_platform` runs it around every
test, so each of them is also a contract test of the producers it drives."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from ragline.contracts import EVENT_TYPES
from ragline.eventcatalog import schema_path
from ragline.topology import BUS_NAME, physical_name

DOCS = Path(__file__).resolve().parents[2] / "docs"
QUEUE = "contract-observer"


@cache
def validators() -> dict[str, Draft202012Validator]:
    return {
        d.DETAIL_TYPE: Draft202012Validator(json.loads((DOCS / schema_path(d)).read_text()))
        for d in EVENT_TYPES
    }


def subscribe_queue(sqs: Any, events: Any, name: str) -> tuple[str, str]:
    """A queue (`name`, made physical) that receives every ragline.* event on the bus; its URL and ARN."""
    queue = physical_name(name)
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": [{"prefix": "ragline."}]}
    events.put_rule(Name=queue, EventBusName=BUS_NAME, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=queue, EventBusName=BUS_NAME, Targets=[{"Id": name, "Arn": arn}])
    return url, arn


class PublishedEvents:
    def __init__(self, sqs: Any, events: Any) -> None:
        self._sqs = sqs
        self._url, _ = subscribe_queue(sqs, events, QUEUE)
        self.checked = 0

    def violations(self) -> list[str]:
        found = []
        while messages := self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10).get(
            "Messages"
        ):
            for message in messages:
                body = json.loads(message["Body"])
                validator = validators().get(body.get("detail-type"))
                if validator is None:
                    found.append(f"{body.get('detail-type')!r} is not in the catalogue")
                    continue
                found += [f"{body['detail-type']}: {error.message}" for error in validator.iter_errors(body)]
                self.checked += 1
            self._sqs.delete_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
        return found
