"""One DynamoDB table per topology TableSpec, built one way, in the stack of the context that owns it."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction
from infra.cdk.naming import pascal
from ragline.topology import TOPOLOGY, TableSpec


def topology_table(scope: Construct, spec: TableSpec, config: DeployConfig, key: kms.IKey) -> dynamodb.Table:
    """On-demand, encrypted with the platform key, point-in-time recovery, TTL when the spec names an
    attribute; string keys and all-attribute indexes, as the local platform creates it
    (ragline.local.provision)."""
    string = dynamodb.AttributeType.STRING
    table = dynamodb.Table(
        scope,
        f"{pascal(spec.name)}Table",
        partition_key=dynamodb.Attribute(name=spec.partition_key, type=string),
        sort_key=dynamodb.Attribute(name=spec.sort_key, type=string) if spec.sort_key else None,
        time_to_live_attribute=spec.ttl_attribute,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        removal_policy=config.cdk_removal_policy,
    )
    for index in spec.indexes:
        table.add_global_secondary_index(
            index_name=index.name,
            partition_key=dynamodb.Attribute(name=index.partition_key, type=string),
            sort_key=dynamodb.Attribute(name=index.sort_key, type=string) if index.sort_key else None,
            projection_type=dynamodb.ProjectionType.ALL,
        )
    return table


def context_tables(
    scope: Construct, context: str, config: DeployConfig, key: kms.IKey
) -> dict[str, dynamodb.Table]:
    """Every topology table the bounded context `context` owns, by topology name."""
    return {
        spec.name: topology_table(scope, spec, config, key)
        for spec in TOPOLOGY.tables
        if spec.context == context
    }


def grant_table_access(
    tables: Mapping[str, dynamodb.Table],
    functions: Mapping[str, RaglineFunction],
    access: Mapping[str, Mapping[str, tuple[str, ...]]],
) -> None:
    """Least privilege on a context's own tables: `access` (function -> table -> actions) must name
    exactly the context's functions, so that a new function cannot slip in without its grants."""
    if set(access) != set(functions):
        raise ValueError(f"TABLE_ACCESS names {sorted(access)}; the stack has {sorted(functions)}")
    for name, fn in functions.items():
        for table, actions in access[name].items():
            tables[table].grant(fn.role, *actions)
