"""Shared messaging: the event bus, every queue (each with its DLQ) and every bus rule.

Built from ragline.topology: a queue or rule added there appears here without edits.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.naming import pascal, rule_name
from ragline.topology import BUS_NAME, DEFAULT_BUS, TOPOLOGY, QueueSpec, RuleSpec

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
            if rule.bucket is not None:
                self._allow_bucket_rule(rule, config)
                continue
            events.Rule(
                self,
                f"Rule{pascal(rule.name)}",
                description=f"ragline {rule.name}",
                event_bus=self.bus if rule.bus == BUS_NAME else None,  # None: the default bus
                event_pattern=events.EventPattern(source=[rule.source], detail_type=list(rule.detail_types)),
                targets=[targets.SqsQueue(self.queues[rule.queue])],
            )
        # Seam: the Step Functions update/delete saga and its rules attach to self.bus here.

    def _allow_bucket_rule(self, rule: RuleSpec, config: DeployConfig) -> None:
        """A rule on S3's events names its bucket, which a later stack (Ingest) creates, so that stack
        creates the rule too. Its target queue lives here, and so does the queue's policy: it admits
        EventBridge for that rule, by the ARN its explicit name gives it (a reference to the rule
        itself would make this stack depend on Ingest, which depends on this one)."""
        if rule.bus != DEFAULT_BUS:
            raise ValueError(f"rule {rule.name}: S3 puts its events on the default bus only")
        queue = self.queues[rule.queue]
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[queue.queue_arn],
                conditions={
                    "ArnEquals": {
                        "aws:SourceArn": self.format_arn(
                            service="events",
                            resource="rule",
                            resource_name=rule_name(config.stage, rule.name),
                        )
                    }
                },
            )
        )

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
