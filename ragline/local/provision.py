"""Creates the local AWS resources (in the moto server) from ragline.topology, the same specs the
CDK app deploys, and returns the settings the functions need to find them. State machines come from
the definitions the CDK app synthesizes, exported to docs/statemachines/ (infra/cdk/statemachines.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragline import aws
from ragline.local.stepfunctions import LOCAL_ACCOUNT
from ragline.settings import Settings
from ragline.topology import (
    BUCKETS,
    BUS_NAME,
    DELETE_STATE_MACHINE,
    STATE_MACHINES,
    TOPOLOGY,
    UPDATE_STATE_MACHINE,
    Topology,
    dlq_name,
    physical_name,
)

STATE_MACHINE_DIR = Path(__file__).resolve().parents[2] / "docs" / "statemachines"
# moto checks nothing about the role; in AWS the CDK app makes one per state machine.
STATES_ROLE = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/ragline-local-states"


@dataclass(frozen=True)
class Provisioned:
    queue_urls: dict[str, str]
    queue_arns: dict[str, str]
    state_machine_arns: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        return {
            "RAGLINE_INDEX_QUEUE_URL": self.queue_urls["index"],
            "RAGLINE_UPLOADS_QUEUE_URL": self.queue_urls["uploads"],
            "RAGLINE_DELIVERIES_QUEUE_URL": self.queue_urls["notify-deliveries"],
            "RAGLINE_DELETE_STATE_MACHINE_ARN": self.state_machine_arns[DELETE_STATE_MACHINE],
            "RAGLINE_UPDATE_STATE_MACHINE_ARN": self.state_machine_arns[UPDATE_STATE_MACHINE],
        }


def provision(
    settings: Settings, topology: Topology = TOPOLOGY, *, state_machine_dir: Path = STATE_MACHINE_DIR
) -> Provisioned:
    s3, sqs, ddb, events = (aws.client(name, settings) for name in ("s3", "sqs", "dynamodb", "events"))

    for bucket in BUCKETS:
        s3.create_bucket(Bucket=physical_name(bucket))
        # Versioned, as deployed (the delete saga removes every version of a document's objects).
        s3.put_bucket_versioning(Bucket=physical_name(bucket), VersioningConfiguration={"Status": "Enabled"})
        if any(rule.bucket == bucket for rule in topology.rules):
            # moto then puts S3's events on EventBridge, as S3 does (see the rules below).
            s3.put_bucket_notification_configuration(
                Bucket=physical_name(bucket), NotificationConfiguration={"EventBridgeConfiguration": {}}
            )

    for table in topology.tables:
        keys = _key_schema(table.partition_key, table.sort_key)
        indexes = [
            {
                "IndexName": index.name,
                "KeySchema": _key_schema(index.partition_key, index.sort_key),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in table.indexes
        ]
        attributes = {k["AttributeName"] for k in keys} | {
            k["AttributeName"] for index in indexes for k in index["KeySchema"]
        }
        ddb.create_table(
            TableName=physical_name(table.name),
            KeySchema=keys,
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"} for name in sorted(attributes)
            ],
            BillingMode="PAY_PER_REQUEST",
            **({"GlobalSecondaryIndexes": indexes} if indexes else {}),
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
        # rule.bus is BUS_NAME or the default bus, which moto (like every account) always has.
        pattern = rule.event_pattern(physical_name(rule.bucket) if rule.bucket else None)
        events.put_rule(
            Name=physical_name(rule.name), EventBusName=rule.bus, EventPattern=json.dumps(pattern)
        )
        events.put_targets(
            Rule=physical_name(rule.name),
            EventBusName=rule.bus,
            Targets=[{"Id": rule.queue, "Arn": arns[rule.queue]}],
        )
    if settings.notify_email_sender:
        # SES sends only from verified identities; the CDK app creates this one from cdk.json.
        aws.client("ses", settings).verify_email_identity(EmailAddress=settings.notify_email_sender)
    sfn = aws.client("stepfunctions", settings)
    machines = {
        name: sfn.create_state_machine(
            name=physical_name(name),
            definition=(state_machine_dir / f"{name}.asl.json").read_text(),
            roleArn=STATES_ROLE,
        )["stateMachineArn"]
        for name in STATE_MACHINES
    }
    return Provisioned(queue_urls=urls, queue_arns=arns, state_machine_arns=machines)


def _key_schema(partition_key: str, sort_key: str | None) -> list[dict[str, str]]:
    keys = [{"AttributeName": partition_key, "KeyType": "HASH"}]
    return keys + ([{"AttributeName": sort_key, "KeyType": "RANGE"}] if sort_key else [])


def _arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
