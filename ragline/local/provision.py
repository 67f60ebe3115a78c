"""Creates the local AWS resources (in the moto server) from ragline.topology, the same specs the
CDK app deploys, and returns the settings the functions need to find them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ragline import aws
from ragline.settings import Settings
from ragline.topology import BUCKETS, BUS_NAME, TOPOLOGY, Topology, dlq_name, physical_name


@dataclass(frozen=True)
class Provisioned:
    queue_urls: dict[str, str]
    queue_arns: dict[str, str]

    def environment(self) -> dict[str, str]:
        return {"RAGLINE_INDEX_QUEUE_URL": self.queue_urls["index"]}


def provision(settings: Settings, topology: Topology = TOPOLOGY) -> Provisioned:
    s3, sqs, ddb, events = (aws.client(name, settings) for name in ("s3", "sqs", "dynamodb", "events"))

    for bucket in BUCKETS:
        s3.create_bucket(Bucket=physical_name(bucket))

    for table in topology.tables:
        keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
        ddb.create_table(
            TableName=physical_name(table.name),
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
            BillingMode="PAY_PER_REQUEST",
        )

    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    for queue in topology.queues:
        dlq_url = sqs.create_queue(QueueName=dlq_name(queue.name))["QueueUrl"]
        dlq_arn = _arn(sqs, dlq_url)
        url = sqs.create_queue(
            QueueName=physical_name(queue.name),
            Attributes={
                "VisibilityTimeout": str(queue.visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receive_count)}
                ),
            },
        )["QueueUrl"]
        urls[queue.name], arns[queue.name] = url, _arn(sqs, url)

    events.create_event_bus(Name=BUS_NAME)
    for rule in topology.rules:
        events.put_rule(
            Name=physical_name(rule.name),
            EventBusName=BUS_NAME,
            EventPattern=json.dumps({"source": [rule.source], "detail-type": list(rule.detail_types)}),
        )
        events.put_targets(
            Rule=physical_name(rule.name),
            EventBusName=BUS_NAME,
            Targets=[{"Id": rule.queue, "Arn": arns[rule.queue]}],
        )
    return Provisioned(queue_urls=urls, queue_arns=arns)


def _arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
