"""Shared messaging and the platform key: the event bus, every queue (each with its DLQ), every bus
rule, and the KMS key everything at rest is encrypted with.

Built from ragline.topology: a queue or rule added there appears here without edits.

One customer-managed key for the deployment, not one per context: the contexts are already kept
apart by IAM on each bucket, table, queue and path, and a key grant here is limited to use *through*
those services (`kms:ViaService`), so it opens nothing by itself. Per-context keys would add key-policy
statements for every flow that crosses a context (EventBridge into every queue, S3 events, the index
reading the parsed bucket) without a boundary IAM does not already draw; one key is one rotation, one
place in CloudTrail, and one key to disable to make every byte of a deployment unreadable.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.naming import pascal, resource_name, rule_name
from ragline.topology import BUS_NAME, DEFAULT_BUS, TOPOLOGY, QueueSpec, RuleSpec

DLQ_RETENTION = Duration.days(14)
# The services a function may use the platform key through (never kms:Decrypt on its own).
KEY_SERVICES = ("s3", "dynamodb", "sqs", "events")
# Contexts whose functions touch nothing encrypted with the key (retrieve reads the search index only).
KEYLESS_CONTEXTS = frozenset({"retrieve"})


class PlatformStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{resource_name(config.stage)}",
            description=f"ragline-{config.stage}: buckets, tables, queues, the event bus and the search index",
            enable_key_rotation=True,
            removal_policy=config.cdk_removal_policy,
        )
        self.bus = events.EventBus(self, "Bus", event_bus_name=f"{BUS_NAME}-{config.stage}", kms_key=self.key)
        # Where every alarm goes (stacks/ops.py): here, because its key policy is the key's.
        self.alarm_topic = sns.Topic(
            self,
            "Alarms",
            topic_name=resource_name(config.stage, "alarms"),
            master_key=self.key,
            enforce_ssl=True,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        for spec in TOPOLOGY.queues:
            self._queue(spec)
        for rule in TOPOLOGY.rules:
            if rule.bucket is not None:
                self._allow_bucket_rule(rule, config)
                continue
            queue = self.queues[rule.queue]
            # Targeted by reference: for a KMS-encrypted queue CDK's SqsQueue target would admit
            # EventBridge with no condition at all; the statement below admits this rule only.
            target = sqs.Queue.from_queue_arn(self, f"Rule{pascal(rule.name)}Target", queue.queue_arn)
            deployed = events.Rule(
                self,
                f"Rule{pascal(rule.name)}",
                description=f"ragline {rule.name}",
                event_bus=self.bus if rule.bus == BUS_NAME else None,  # None: the default bus
                event_pattern=events.EventPattern(source=[rule.source], detail_type=list(rule.detail_types)),
                targets=[targets.SqsQueue(target)],
            )
            self._admit(queue, deployed.rule_arn)
        # EventBridge encrypts what it delivers to the queues with the key: from this account's rules
        # only (a rule's ARN here would be a cycle: key -> rule -> queue -> key).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )

    def _admit(self, queue: sqs.Queue, rule_arn: str) -> None:
        """EventBridge may send to `queue` for the rule `rule_arn` only."""
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[queue.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": rule_arn}},
            )
        )

    def _allow_bucket_rule(self, rule: RuleSpec, config: DeployConfig) -> None:
        """A rule on S3's events names its bucket, which a later stack (Ingest) creates, so that stack
        creates the rule too. Its target queue lives here, and so does the queue's policy: it admits
        EventBridge for that rule, by the ARN its explicit name gives it (a reference to the rule
        itself would make this stack depend on Ingest, which depends on this one)."""
        if rule.bus != DEFAULT_BUS:
            raise ValueError(f"rule {rule.name}: S3 puts its events on the default bus only")
        rule_arn = self.format_arn(
            service="events", resource="rule", resource_name=rule_name(config.stage, rule.name)
        )
        self._admit(self.queues[rule.queue], rule_arn)

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
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
        )
        self.dead_letter_queues[spec.name] = dlq
        self.queues[spec.name] = sqs.Queue(
            self,
            f"{name}Queue",
            visibility_timeout=Duration.seconds(spec.visibility_timeout_s),
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            # Reuse a data key for 5 minutes: fewer KMS calls per message (cost and KMS quotas).
            data_key_reuse=Duration.minutes(5),
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=spec.max_receive_count, queue=dlq),
        )

    def grant_key_use(self, role: iam.IRole) -> None:
        """Encrypt and decrypt with the platform key, only as S3, DynamoDB, SQS or EventBridge do on
        the role's behalf (what the role may read or write is still each resource's own grant)."""
        region = Stack.of(self).region
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[self.key.key_arn],
                conditions={
                    "StringEquals": {
                        "kms:ViaService": [f"{service}.{region}.amazonaws.com" for service in KEY_SERVICES]
                    }
                },
            )
        )
