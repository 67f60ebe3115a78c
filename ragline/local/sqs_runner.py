"""Delivers SQS messages to the SQS-triggered handlers as Lambda's event source mapping does:
batches as Lambda SQS events, successful and unreported messages deleted, the ones named in
`batchItemFailures` left to reappear after the visibility timeout; the queue's redrive policy (in
moto, as in SQS) moves a message to its DLQ after maxReceiveCount receives."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ragline.local.lambda_runtime import LocalFunction
from ragline.topology import QueueSpec

log = logging.getLogger("ragline.local.sqs")


def lambda_sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": value.get("BinaryValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class QueuePoller(threading.Thread):
    def __init__(
        self,
        sqs: Any,
        spec: QueueSpec,
        url: str,
        arn: str,
        function: LocalFunction,
        stop: threading.Event,
        region: str,
    ) -> None:
        super().__init__(name=f"sqs-{spec.name}", daemon=True)
        self._sqs, self._spec, self._url, self._arn = sqs, spec, url, arn
        self._function, self._stop, self._region = function, stop, region

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(wait_s=1)
            except Exception:  # keep polling like the event source mapping does
                log.exception("polling %s failed", self._spec.name)
                self._stop.wait(1)

    def poll_once(self, wait_s: int = 0) -> int:
        messages = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=min(self._spec.batch_size, 10),
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = lambda_sqs_event(messages, self._arn, self._region)
        try:
            result = self._function.invoke(event) or {}
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        except Exception:
            # An unhandled error fails the whole batch: every message comes back after the timeout.
            log.exception("%s failed a whole batch", self._function.name)
            return len(messages)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)
