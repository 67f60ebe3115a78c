"""Ingest: the raw and parsed buckets, the documents table and the ingest functions.

Only this context writes the buckets and the documents table.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction, context_functions
from infra.cdk.environment import env, var
from infra.cdk.naming import pascal
from infra.cdk.packaging import TOKENIZER_PATH
from infra.cdk.stacks.platform import PlatformStack
from ragline.contracts import ChunksReady
from ragline.topology import BUCKETS, POINT_TO_POINT, TOPOLOGY, TableSpec

CONTEXT = "ingest"


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
                encryption=s3.BucketEncryption.S3_MANAGED,
                enforce_ssl=True,
                versioned=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"{name}/",
                removal_policy=config.cdk_removal_policy,
            )
            for name in BUCKETS
        }
        self.tables: dict[str, dynamodb.Table] = {
            spec.name: self._table(spec, config) for spec in TOPOLOGY.tables
        }

        index_queue = platform.queues[POINT_TO_POINT[ChunksReady.DETAIL_TYPE]]
        environment = {
            **{var(f"{name}_bucket"): bucket.bucket_name for name, bucket in self.buckets.items()},
            **{var(f"{name}_table"): table.table_name for name, table in self.tables.items()},
            **env(
                event_bus=platform.bus.event_bus_name,
                index_queue_url=index_queue.queue_url,
                embedding_tokenizer=TOKENIZER_PATH,
            ),
        }
        self.functions: dict[str, RaglineFunction] = context_functions(
            self, CONTEXT, config=config, environment=environment, queues=platform.queues
        )
        for fn in self.functions.values():
            role = fn.role
            for bucket in self.buckets.values():
                bucket.grant_read_write(role)
            for table in self.tables.values():
                table.grant_read_write_data(role)
            platform.bus.grant_put_events_to(role)
            index_queue.grant_send_messages(role)

    def _table(self, spec: TableSpec, config: DeployConfig) -> dynamodb.Table:
        string = dynamodb.AttributeType.STRING
        return dynamodb.Table(
            self,
            f"{pascal(spec.name)}Table",
            partition_key=dynamodb.Attribute(name=spec.partition_key, type=string),
            sort_key=dynamodb.Attribute(name=spec.sort_key, type=string) if spec.sort_key else None,
            time_to_live_attribute=spec.ttl_attribute,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=config.cdk_removal_policy,
        )
