"""Notify: the subscriptions API, webhook and email delivery, the event catalogue in the EventBridge
Schema Registry, and the SES identity emails come from.

Its queues (notify-events, notify-deliveries, each with a DLQ) and the bus rules that feed it are the
Platform stack's, built from ragline.topology like every other queue and rule.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_eventschemas as eventschemas
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ses as ses
from constructs import Construct

from infra.cdk.apimodels import draft4_schema
from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction, context_functions
from infra.cdk.constructs.table import context_tables, grant_table_access
from infra.cdk.environment import env
from infra.cdk.naming import resource_name
from infra.cdk.stacks.platform import PlatformStack
from ragline.contracts import PUBLIC_EVENT_TYPES, EventDetail
from ragline.eventcatalog import event_schema

NOTIFY = "notify"
API, FANOUT, DELIVER = "notify-api", "notify-fanout", "notify-deliver"
DELIVERIES_QUEUE = "notify-deliveries"
# Least privilege on notify's own tables (function -> table -> actions). Signing keys: written and
# deleted by the API, read by delivery only; nothing that lists subscriptions can read them.
TABLE_ACCESS: dict[str, dict[str, tuple[str, ...]]] = {
    API: {
        "subscriptions": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"),
        "webhook-secrets": ("dynamodb:PutItem", "dynamodb:DeleteItem"),
    },
    FANOUT: {"subscriptions": ("dynamodb:Query",)},
    DELIVER: {
        "subscriptions": ("dynamodb:GetItem", "dynamodb:UpdateItem"),
        "webhook-secrets": ("dynamodb:GetItem",),
    },
}


def registry_schema(detail: type[EventDetail]) -> dict[str, Any]:
    """The event's schema as the Schema Registry takes it: JSON Schema draft 4, self-contained."""
    return draft4_schema(event_schema(detail))


def schema_name(detail: type[EventDetail]) -> str:
    return f"ragline@{detail.DETAIL_TYPE}"


class NotifyStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        platform: PlatformStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.tables: dict[str, dynamodb.Table] = context_tables(self, NOTIFY, config, platform.key)
        sender = config.notify.email_sender
        environment = env(
            subscriptions_table=self.tables["subscriptions"].table_name,
            webhook_secrets_table=self.tables["webhook-secrets"].table_name,
            deliveries_queue_url=platform.queues[DELIVERIES_QUEUE].queue_url,
            event_bus=platform.bus.event_bus_name,
        )
        if sender is not None:
            environment |= env(notify_email_sender=sender)
        self.functions: dict[str, RaglineFunction] = context_functions(
            self, NOTIFY, config=config, environment=environment, queues=platform.queues
        )
        grant_table_access(self.tables, self.functions, TABLE_ACCESS)
        platform.queues[DELIVERIES_QUEUE].grant_send_messages(self.functions[FANOUT].role)
        deliver = self.functions[DELIVER]
        platform.bus.grant_put_events_to(deliver.role)  # SubscriptionDisabled

        self.email_identity = None
        if sender is not None:
            self.email_identity = ses.EmailIdentity(
                self, "EmailIdentity", identity=ses.Identity.email(sender)
            )
            deliver.role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["ses:SendEmail"],
                    resources=[self.format_arn(service="ses", resource="identity", resource_name=sender)],
                )
            )

        # The catalogue where EventBridge users look for it: one schema per public event.
        self.registry = eventschemas.CfnRegistry(
            self,
            "EventRegistry",
            registry_name=resource_name(config.stage),
            description="Ragline's published events (docs/events/README.md)",
        )
        self.schemas = {
            detail.DETAIL_TYPE: eventschemas.CfnSchema(
                self,
                f"{detail.DETAIL_TYPE}Schema",
                registry_name=self.registry.attr_registry_name,
                schema_name=schema_name(detail),
                type="JSONSchemaDraft4",
                content=json.dumps(registry_schema(detail)),
                description=f"{detail.DETAIL_TYPE} {detail.SCHEMA_VERSION}: "
                + (detail.__doc__ or "").strip().split("\n")[0][:200],
            )
            for detail in PUBLIC_EVENT_TYPES
        }
