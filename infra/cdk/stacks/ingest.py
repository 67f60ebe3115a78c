"""Ingest: the raw and parsed buckets, the ingest context's tables and the ingest functions.

Only this context writes the buckets and its tables. The raw bucket also takes presigned
uploads straight from clients (CORS allows browsers to PUT) and sends its events to EventBridge;
the default bus's rule for them lives here because its pattern names the bucket.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction, context_functions
from infra.cdk.constructs.table import context_tables
from infra.cdk.environment import env, var
from infra.cdk.naming import function_name, pascal, rule_name, state_machine_name
from infra.cdk.packaging import TOKENIZER_PATH
from infra.cdk.stacks.platform import PlatformStack
from ragline.contracts import ChunksReady, UploadDeadline
from ragline.topology import (
    BUCKETS,
    DELETE_STATE_MACHINE,
    POINT_TO_POINT,
    TOPOLOGY,
    UPDATE_STATE_MACHINE,
    RouteSpec,
    RuleSpec,
)

CONTEXT = "ingest"


def starters(method: str, path: str) -> set[str]:
    """The functions that serve `method path`."""
    return {f.name for f in TOPOLOGY.functions if RouteSpec(method, path) in f.routes}


# Buckets whose events a topology rule routes: clients upload into them with presigned PUTs.
UPLOAD_BUCKETS = {rule.bucket for rule in TOPOLOGY.rules if rule.bucket is not None}
# Who hands out upload URLs: each schedules its UploadDeadline on the uploads queue.
UPLOAD_STARTERS = starters("POST", "/v1/documents")
# Who starts the delete saga (DELETE /v1/documents/{id}), and the function that runs ingest's steps.
DELETE_STARTERS = starters("DELETE", "/v1/documents/{document_id}")
# Who starts the update saga (PUT /v1/documents/{id}).
UPDATE_STARTERS = starters("PUT", "/v1/documents/{document_id}")
SAGA_FUNCTION = "ingest-saga"
# The reconciler, and the index context's function it asks (deployed later, so known by name).
RECONCILE_FUNCTION = "ingest-reconcile"
INDEX_MAINTENANCE_FUNCTION = "index-maintenance"
# Browsers PUT to the presigned URL from any origin (the signature, not the origin, authorizes it):
# narrow allowed_origins to your web app's origin if you have one.
UPLOAD_CORS = [
    s3.CorsRule(
        allowed_methods=[s3.HttpMethods.PUT],
        allowed_origins=["*"],
        allowed_headers=["Content-Type", "If-None-Match"],
        max_age=3000,
    )
]


class IngestStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeployConfig, platform: PlatformStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogsBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,  # server access logs need SSE-S3
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=config.cdk_removal_policy,
        )
        self.buckets: dict[str, s3.Bucket] = {
            name: s3.Bucket(
                self,
                f"{pascal(name)}Bucket",
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                encryption=s3.BucketEncryption.KMS,
                encryption_key=platform.key,
                bucket_key_enabled=True,  # one data key per bucket, not a KMS call per object
                enforce_ssl=True,
                versioned=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"{name}/",
                removal_policy=config.cdk_removal_policy,
                event_bridge_enabled=name in UPLOAD_BUCKETS,
                cors=UPLOAD_CORS if name in UPLOAD_BUCKETS else None,
            )
            for name in BUCKETS
        }
        self.tables: dict[str, dynamodb.Table] = context_tables(self, CONTEXT, config, platform.key)

        index_queue = platform.queues[POINT_TO_POINT[ChunksReady.DETAIL_TYPE]]
        environment = {
            **{var(f"{name}_bucket"): bucket.bucket_name for name, bucket in self.buckets.items()},
            **{var(f"{name}_table"): table.table_name for name, table in self.tables.items()},
            **env(
                event_bus=platform.bus.event_bus_name,
                index_queue_url=index_queue.queue_url,
                embedding_tokenizer=TOKENIZER_PATH,
                # Documents are checked against the filterable fields when they are created.
                metadata_fields=config.search.settings()["metadata_fields"],
            ),
        }
        self.functions: dict[str, RaglineFunction] = context_functions(
            self, CONTEXT, config=config, environment=environment, queues=platform.queues
        )
        upload_consumers = set()
        for rule in TOPOLOGY.rules:
            if rule.bucket is None:
                continue
            self._bucket_rule(rule, config, platform)
            consumer = TOPOLOGY.consumer_of(rule.queue).name
            upload_consumers.add(consumer)
            # Least privilege: read (hash) and delete (oversize) the uploads, move their records
            # (get, conditional update), announce them.
            role = self.functions[consumer].role
            keys = f"{rule.key_prefix or ''}*"
            self.buckets[rule.bucket].grant_read(role, keys)
            self.buckets[rule.bucket].grant_delete(role, keys)
            self.tables["documents"].grant(role, "dynamodb:GetItem", "dynamodb:UpdateItem")
            platform.bus.grant_put_events_to(role)
            # UploadDeadline: sent by whoever hands out URLs, re-sent by the consumer while the
            # deadline is further than SQS's longest delay. Only these two may send to the queue.
            uploads_queue = platform.queues[POINT_TO_POINT[UploadDeadline.DETAIL_TYPE]]
            for name in UPLOAD_STARTERS | {consumer}:
                self.functions[name].function.add_environment(
                    var("uploads_queue_url"), uploads_queue.queue_url
                )
                uploads_queue.grant(self.functions[name].role, "sqs:SendMessage")
        self._delete_saga(config, platform)
        self._update_saga(config)
        self._reconciler(config, platform)
        for fn in self.functions.values():
            if fn.spec.name in upload_consumers or fn.spec.name in (SAGA_FUNCTION, RECONCILE_FUNCTION):
                continue
            role = fn.role
            for bucket in self.buckets.values():
                bucket.grant_read_write(role)
            for table in self.tables.values():
                table.grant_read_write_data(role)
            platform.bus.grant_put_events_to(role)
            index_queue.grant_send_messages(role)

    def _reconciler(self, config: DeployConfig, platform: PlatformStack) -> None:
        """ingest-reconcile reads the documents (Scan, then a consistent GetItem before each repair)
        and operations tables, marks an unrestorable phantom failed (UpdateItem) and says so, and
        invokes the index context's maintenance function, by name, and nothing else."""
        fn = self.functions[RECONCILE_FUNCTION]
        maintenance = function_name(config.stage, INDEX_MAINTENANCE_FUNCTION)
        fn.function.add_environment(var("index_maintenance_function"), maintenance)
        fn.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[
                    self.format_arn(
                        service="lambda",
                        resource="function",
                        resource_name=maintenance,
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.tables["documents"].grant(fn.role, "dynamodb:Scan", "dynamodb:GetItem", "dynamodb:UpdateItem")
        self.tables["operations"].grant(fn.role, "dynamodb:GetItem")
        platform.bus.grant_put_events_to(fn.role)

    def _grant_start(self, config: DeployConfig, machine: str, names: set[str], setting: str) -> None:
        """`names` may start executions of the saga state machine `machine` (known by its explicit
        name: the Saga stack comes later) and learn its ARN from the `setting` variable."""
        arn = self.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=state_machine_name(config.stage, machine),
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for name in names:
            self.functions[name].function.add_environment(var(setting), arn)
            self.functions[name].role.add_to_principal_policy(
                iam.PolicyStatement(actions=["states:StartExecution"], resources=[arn])
            )

    def _delete_saga(self, config: DeployConfig, platform: PlatformStack) -> None:
        """The starters may start executions of the document-delete state machine and nothing else;
        ingest-saga may read and write the documents and operations tables, delete (every version
        of) the objects under each bucket's own prefix, and announce the outcome."""
        self._grant_start(config, DELETE_STATE_MACHINE, DELETE_STARTERS, "delete_state_machine_arn")
        role = self.functions[SAGA_FUNCTION].role
        self.tables["documents"].grant(role, "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
        self.tables["operations"].grant(role, "dynamodb:GetItem", "dynamodb:PutItem")
        for name, bucket in self.buckets.items():
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket", "s3:ListBucketVersions"], resources=[bucket.bucket_arn]
                )
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
                    resources=[bucket.arn_for_objects(f"{name}/*")],
                )
            )
        platform.bus.grant_put_events_to(role)

    def _update_saga(self, config: DeployConfig) -> None:
        """The starters may start executions of the document-update state machine (they store the
        new original first: they write the raw bucket already); ingest-saga may also read the
        originals, write the parsed files (ParseAndChunk), read the collections (chunk settings) and put
        the content claim of a new version."""
        self._grant_start(config, UPDATE_STATE_MACHINE, UPDATE_STARTERS, "update_state_machine_arn")
        role = self.functions[SAGA_FUNCTION].role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[self.buckets["raw"].arn_for_objects("raw/*")]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self.buckets["parsed"].arn_for_objects("parsed/*")]
            )
        )
        self.tables["collections"].grant(role, "dynamodb:GetItem")
        self.tables["documents"].grant(role, "dynamodb:PutItem")  # SwitchVersion: the content claim

    def _bucket_rule(self, rule: RuleSpec, config: DeployConfig, platform: PlatformStack) -> None:
        """On the default bus (S3 puts its events nowhere else), named as the Platform stack's queue
        policy expects. The queue is imported by ARN so that CDK does not add to its policy from here."""
        pattern = rule.event_pattern(self.buckets[rule.bucket].bucket_name)
        queue = sqs.Queue.from_queue_arn(
            self, f"{pascal(rule.queue)}QueueRef", platform.queues[rule.queue].queue_arn
        )
        events.Rule(
            self,
            f"Rule{pascal(rule.name)}",
            rule_name=rule_name(config.stage, rule.name),
            description=f"ragline {rule.name}",
            event_pattern=events.EventPattern(
                source=pattern["source"], detail_type=pattern["detail-type"], detail=pattern.get("detail")
            ),
            targets=[targets.SqsQueue(queue)],
        )
