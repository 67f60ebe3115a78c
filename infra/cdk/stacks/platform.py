"""Shared messaging: the event bus, every queue (each with its DLQ) and every bus rule.

Built from ragline.topology: a queue or rule added there appears here without edits.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.naming import pascal
from ragline.topology import BUS_NAME, TOPOLOGY, QueueSpec

DLQ_RETENTION = Duration.days(14)


class PlatformStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.bus = events.EventBus(self, "Bus", event_bus_name=f"{BUS_NAME}-{config.stage}")
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        for spec in TOPOLOGY.queues:
            self._queue(spec)
        for rule in TOPOLOGY.rules:
            events.Rule(
                self,
                f"Rule{pascal(rule.name)}",
                description=f"ragline {rule.name}",
                event_bus=self.bus,
                event_pattern=events.EventPattern(source=[rule.source], detail_type=list(rule.detail_types)),
                targets=[targets.SqsQueue(self.queues[rule.queue])],
            )
        # Seam: the Step Functions update/delete saga and its rules attach to self.bus here.

    def _queue(self, spec: QueueSpec) -> None:
        consumer = TOPOLOGY.consumer_of(spec.name)
        if spec.visibility_timeout_s < consumer.timeout_s:
            raise ValueError(
                f"queue {spec.name}: visibility timeout {spec.visibility_timeout_s}s is below its consumer "
                f"{consumer.name}'s timeout {consumer.timeout_s}s (messages would be processed twice)"
            )
        name = pascal(spec.name)
        dlq = sqs.Queue(
            self,
            f"{name}Dlq",
            retention_period=DLQ_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.dead_letter_queues[spec.name] = dlq
        self.queues[spec.name] = sqs.Queue(
            self,
            f"{name}Queue",
            visibility_timeout=Duration.seconds(spec.visibility_timeout_s),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=spec.max_receive_count, queue=dlq),
        )
