"""What the platform is made of, in one place: functions, routes, queues, rules, buckets, tables.

The CDK app builds AWS resources from these specs and the local platform builds the moto resources
and its gateway routes from the same specs, so local and AWS cannot drift apart silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragline.contracts import (
    PUBLIC_EVENT_TYPES,
    ChunksReady,
    DeliveryRequested,
    DocumentDeleted,
    DocumentFailed,
    DocumentIndexed,
    DocumentUpdated,
    DocumentUploaded,
    IndexingStarted,
    UploadDeadline,
)
from ragline.eventcatalog import sources

BUS_NAME = "ragline"
# The account's default bus: AWS services (S3 among them) put their events there and on no other.
DEFAULT_BUS = "default"
BUCKETS = ("raw", "parsed")
# S3's EventBridge events (a bucket with EventBridge notifications on sends every one of them).
S3_SOURCE = "aws.s3"
S3_OBJECT_CREATED = "Object Created"
# Tags the CDK app puts on deployed resources with their topology name, so a synthesized template maps
# back to the specs: the local platform resolves a state machine's Lambda ARNs to the functions it runs
# with them (ragline.local.stepfunctions).
FUNCTION_TAG = "ragline:function"
STATE_MACHINE_TAG = "ragline:state-machine"
# The sagas (docs/saga.md): state machines defined in the CDK app (infra/cdk/stacks/saga.py), whose
# resolved definitions are exported to docs/statemachines/ for the local platform.
DELETE_STATE_MACHINE = "document-delete"
UPDATE_STATE_MACHINE = "document-update"
STATE_MACHINES = (DELETE_STATE_MACHINE, UPDATE_STATE_MACHINE)


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index (string keys, every attribute projected)."""

    name: str
    partition_key: str
    sort_key: str | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    context: str  # the bounded context that owns it: its stack creates it, only its functions use it
    partition_key: str
    sort_key: str | None = None
    ttl_attribute: str | None = None
    indexes: tuple[IndexSpec, ...] = ()


@dataclass(frozen=True)
class QueueSpec:
    name: str
    visibility_timeout_s: int
    max_receive_count: int = 3
    batch_size: int = 10
    # Seconds the consumer may spend on a batch; the queue's visibility timeout is kept above it.
    consumer_timeout_s: int = 60


# OAuth scopes (a Cognito resource server's, named RESOURCE_SERVER/scope in access tokens): what a
# token lets its holder do. Reads are their own scope so read-only clients (dashboards, status
# pollers) need no write grant; answers are their own because they cost LLM time; subscriptions
# are their own because a webhook sends document events to an address outside the platform.
RESOURCE_SERVER = "ragline"
SCOPES = ("documents:read", "documents:write", "search", "answers", "subscriptions")


def oauth_scope(scope: str) -> str:
    """The scope as Cognito writes it in an access token's `scope` claim."""
    return f"{RESOURCE_SERVER}/{scope}"


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    # The scope a token needs for this route (one of SCOPES). Not part of a route's identity, so
    # RouteSpec(method, path) still finds it; every route in TOPOLOGY has one (tests/unit check).
    scope: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.scope is not None and self.scope not in SCOPES:
            raise ValueError(f"{self.method} {self.path}: unknown scope {self.scope!r} (one of {SCOPES})")


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    context: str
    handler: str  # module.function for Lambda; module:app for the ASGI app
    routes: tuple[RouteSpec, ...] = ()
    queue: str | None = None
    memory_mb: int = 512
    timeout_s: int = 30
    # An ASGI app behind the Lambda Web Adapter in response_stream mode: every one of its routes is a
    # streaming integration in AWS (a buffered one cannot read a streamed invocation).
    asgi: bool = False
    # An EventBridge schedule expression ("rate(1 hour)", "cron(...)") that invokes it in AWS.
    schedule: str | None = None
    # Deployed under an explicit name: a function in a stack deployed before its own invokes it.
    named: bool = False


@dataclass(frozen=True)
class RuleSpec:
    name: str
    source: str
    detail_types: tuple[str, ...]
    queue: str
    bus: str = BUS_NAME  # or DEFAULT_BUS, for AWS services' events
    # S3 events only: objects of this topology bucket (the pattern names its deployed bucket)
    # whose key starts with `key_prefix`.
    bucket: str | None = None
    key_prefix: str | None = None

    def event_pattern(self, bucket_name: str | None = None) -> dict[str, Any]:
        """The EventBridge pattern; `bucket_name` is the deployed name of `bucket` (a CDK token in AWS)."""
        pattern: dict[str, Any] = {"source": [self.source], "detail-type": list(self.detail_types)}
        detail: dict[str, Any] = {}
        if self.bucket is not None:
            if bucket_name is None:
                raise ValueError(f"rule {self.name} needs the deployed name of bucket {self.bucket!r}")
            detail["bucket"] = {"name": [bucket_name]}
        if self.key_prefix is not None:
            detail["object"] = {"key": [{"prefix": self.key_prefix}]}
        if detail:
            pattern["detail"] = detail
        return pattern


@dataclass(frozen=True)
class Topology:
    tables: tuple[TableSpec, ...]
    queues: tuple[QueueSpec, ...]
    rules: tuple[RuleSpec, ...]
    functions: tuple[FunctionSpec, ...] = field(default=())

    def queue(self, name: str) -> QueueSpec:
        return next(q for q in self.queues if q.name == name)

    def function(self, name: str) -> FunctionSpec:
        return next(f for f in self.functions if f.name == name)

    def consumer_of(self, queue: str) -> FunctionSpec:
        return next(f for f in self.functions if f.queue == queue)

    def route_scopes(self) -> dict[tuple[str, str], str | None]:
        """(METHOD, path) -> the scope its token needs, for every route."""
        return {(r.method, r.path): r.scope for f in self.functions for r in f.routes}


TOPOLOGY = Topology(
    tables=(
        # Documents, plus one `hash#...` claim item per (tenant, collection, content, groups) written
        # in the same transaction as its document (content dedupe). The indexes list a tenant's
        # documents newest first, all of them or one collection's (GET /v1/documents).
        TableSpec(
            name="documents",
            context="ingest",
            partition_key="id",
            indexes=(
                IndexSpec(name="by-tenant", partition_key="list_tenant", sort_key="list_order"),
                IndexSpec(name="by-collection", partition_key="list_collection", sort_key="list_order"),
            ),
        ),
        # Collections per tenant (`default` is implicit and never stored).
        TableSpec(name="collections", context="ingest", partition_key="tenant_scope", sort_key="name"),
        # Idempotency-Key records of POST /v1/documents (Powertools idempotency), expired by TTL.
        TableSpec(name="idempotency", context="ingest", partition_key="id", ttl_attribute="expiration"),
        # Operations (sagas) of DELETE /v1/documents/{id}, shown by GET /v1/operations/{id}, expired by TTL.
        TableSpec(name="operations", context="ingest", partition_key="operation_id", ttl_attribute="ttl"),
        # Conversations of POST /v1/answers (one item holds the turns), expired by TTL after their last turn.
        TableSpec(
            name="conversations", context="context", partition_key="conversation_id", ttl_attribute="ttl"
        ),
        # Cached answers and each collection's current cache generation, expired by TTL.
        TableSpec(name="answer-cache", context="context", partition_key="pk", ttl_attribute="ttl"),
        # Webhook and email subscriptions: listed by owner (tenant#user), matched to events by tenant.
        TableSpec(
            name="subscriptions",
            context="notify",
            partition_key="subscription_id",
            indexes=(
                IndexSpec(name="by-owner", partition_key="owner_key", sort_key="created_at"),
                IndexSpec(name="by-tenant", partition_key="tenant_key"),
            ),
        ),
        # Webhook signing keys, as issued (HMAC needs the key itself), apart from what the API lists.
        TableSpec(name="webhook-secrets", context="notify", partition_key="subscription_id"),
    ),
    queues=(
        QueueSpec(name="ingest", visibility_timeout_s=360, batch_size=5, consumer_timeout_s=300),
        QueueSpec(name="index", visibility_timeout_s=360, batch_size=10, consumer_timeout_s=300),
        QueueSpec(name="ingest-status", visibility_timeout_s=60, batch_size=10, consumer_timeout_s=30),
        # S3 "Object Created" events of presigned uploads (each may hash up to max_document_bytes).
        QueueSpec(name="uploads", visibility_timeout_s=360, batch_size=5, consumer_timeout_s=300),
        # Document changes that make cached answers stale (their collection's cache is invalidated).
        QueueSpec(name="answer-cache", visibility_timeout_s=60, batch_size=10, consumer_timeout_s=30),
        # Public events, fanned out to one delivery per matching subscription.
        QueueSpec(name="notify-events", visibility_timeout_s=60, batch_size=10, consumer_timeout_s=30),
        # One delivery a message; a failed try waits out its backoff (ChangeMessageVisibility), the
        # last goes to the DLQ. 5 a batch: at 10 s a POST, within the consumer's timeout.
        QueueSpec(
            name="notify-deliveries",
            visibility_timeout_s=90,
            max_receive_count=8,
            batch_size=5,
            consumer_timeout_s=60,
        ),
    ),
    rules=(
        RuleSpec(
            name="uploaded-to-ingest",
            source=DocumentUploaded.SOURCE,
            detail_types=(DocumentUploaded.DETAIL_TYPE,),
            queue="ingest",
        ),
        RuleSpec(
            name="index-outcome-to-ingest-status",
            source=DocumentIndexed.SOURCE,
            detail_types=(
                IndexingStarted.DETAIL_TYPE,
                DocumentIndexed.DETAIL_TYPE,
                DocumentFailed.DETAIL_TYPE,
            ),
            queue="ingest-status",
        ),
        RuleSpec(
            name="raw-object-created-to-uploads",
            source=S3_SOURCE,
            detail_types=(S3_OBJECT_CREATED,),
            queue="uploads",
            bus=DEFAULT_BUS,
            bucket="raw",
            key_prefix="raw/",
        ),
        RuleSpec(
            name="index-outcome-to-answer-cache",
            source=DocumentIndexed.SOURCE,
            detail_types=(DocumentIndexed.DETAIL_TYPE,),
            queue="answer-cache",
        ),
        RuleSpec(
            name="document-changes-to-answer-cache",
            source=DocumentUpdated.SOURCE,
            detail_types=(DocumentUpdated.DETAIL_TYPE, DocumentDeleted.DETAIL_TYPE),
            queue="answer-cache",
        ),
        *(
            RuleSpec(
                name=f"{source.removeprefix('ragline.')}-events-to-notify",
                source=source,
                detail_types=tuple(e.DETAIL_TYPE for e in PUBLIC_EVENT_TYPES if source in sources(e)),
                queue="notify-events",
            )
            for source in ("ragline.ingest", "ragline.index", "ragline.notify")
        ),
    ),
    functions=(
        FunctionSpec(
            name="ingest-api",
            context="ingest",
            handler="functions.ingest.handlers.api.handler",
            routes=(
                RouteSpec("POST", "/v1/documents", "documents:write"),
                RouteSpec("GET", "/v1/documents", "documents:read"),
                RouteSpec("GET", "/v1/documents/{document_id}", "documents:read"),
                RouteSpec("PUT", "/v1/documents/{document_id}", "documents:write"),
                RouteSpec("DELETE", "/v1/documents/{document_id}", "documents:write"),
                RouteSpec("GET", "/v1/operations/{operation_id}", "documents:read"),
                RouteSpec("POST", "/v1/collections", "documents:write"),
                RouteSpec("GET", "/v1/collections", "documents:read"),
                RouteSpec("GET", "/v1/collections/{name}", "documents:read"),
            ),
        ),
        FunctionSpec(
            name="ingest-worker",
            context="ingest",
            handler="functions.ingest.handlers.worker.handler",
            queue="ingest",
            memory_mb=1024,
            timeout_s=300,
        ),
        FunctionSpec(
            name="ingest-status",
            context="ingest",
            handler="functions.ingest.handlers.status.handler",
            queue="ingest-status",
        ),
        FunctionSpec(
            name="ingest-object-created",
            context="ingest",
            handler="functions.ingest.handlers.object_created.handler",
            queue="uploads",
            timeout_s=300,
        ),
        # The delete saga's steps on ingest's data, invoked by the state machine (a `step` field says which).
        FunctionSpec(
            name="ingest-saga",
            context="ingest",
            handler="functions.ingest.handlers.saga.handler",
            timeout_s=120,
        ),
        FunctionSpec(
            name="index-worker",
            context="index",
            handler="functions.index.handlers.worker.handler",
            queue="index",
            memory_mb=1024,
            timeout_s=300,
        ),
        # The saga's steps on the search index (delete a document's vectors; re-index as compensation).
        FunctionSpec(
            name="index-saga",
            context="index",
            handler="functions.index.handlers.saga.handler",
            memory_mb=1024,
            timeout_s=300,
        ),
        # The index's side of reconciliation: list what the index holds, delete orphans, restore a
        # version (invoked by ingest-reconcile; the index context stays the index's only writer).
        FunctionSpec(
            name="index-maintenance",
            context="index",
            handler="functions.index.handlers.maintenance.handler",
            named=True,
            memory_mb=1024,
            timeout_s=300,
        ),
        # The documents table against the index: orphaned vectors and phantom documents, repaired.
        FunctionSpec(
            name="ingest-reconcile",
            context="ingest",
            handler="functions.ingest.handlers.reconcile.handler",
            named=True,  # `ragline reconcile --aws --function ragline-<stage>-ingest-reconcile`
            timeout_s=900,
            schedule="rate(6 hours)",
        ),
        FunctionSpec(
            name="retrieve-api",
            context="retrieve",
            handler="functions.retrieve.handlers.api.handler",
            routes=(RouteSpec("POST", "/v1/search", "search"),),
        ),
        FunctionSpec(
            name="retrieve-invoke",
            context="retrieve",
            handler="functions.retrieve.handlers.invoke.handler",
        ),
        FunctionSpec(
            name="context-answers",
            context="context",
            handler="functions.context.app:app",
            routes=(
                RouteSpec("POST", "/v1/answers", "answers"),
                RouteSpec("GET", "/v1/conversations/{conversation_id}", "answers"),
            ),
            asgi=True,
            memory_mb=1024,
            timeout_s=120,
        ),
        FunctionSpec(
            name="context-cache-invalidation",
            context="context",
            handler="functions.context.handlers.cache_invalidation.handler",
            queue="answer-cache",
        ),
        FunctionSpec(
            name="notify-api",
            context="notify",
            handler="functions.notify.handlers.api.handler",
            routes=(
                RouteSpec("POST", "/v1/subscriptions", "subscriptions"),
                RouteSpec("GET", "/v1/subscriptions", "subscriptions"),
                RouteSpec("GET", "/v1/subscriptions/{subscription_id}", "subscriptions"),
                RouteSpec("DELETE", "/v1/subscriptions/{subscription_id}", "subscriptions"),
            ),
        ),
        FunctionSpec(
            name="notify-fanout",
            context="notify",
            handler="functions.notify.handlers.fanout.handler",
            queue="notify-events",
        ),
        FunctionSpec(
            name="notify-deliver",
            context="notify",
            handler="functions.notify.handlers.deliver.handler",
            queue="notify-deliveries",
            timeout_s=60,
        ),
    ),
)


def pascal(name: str) -> str:
    """A topology name as CDK construct ids spell it (kebab-case -> PascalCase): the CDK app names its
    constructs so, and `ragline dlq` finds deployed queues by them."""
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def physical_name(name: str) -> str:
    """Resource names on the local platform (CDK lets CloudFormation name them in AWS)."""
    return f"ragline-{name}"


def dlq_name(queue: str) -> str:
    return physical_name(f"{queue}-dlq")


# Messages sent straight to a queue (point to point, not via the bus): ingest's ChunksReady to
# index, and each presigned upload's UploadDeadline to the queue that also gets S3's events.
POINT_TO_POINT = {
    ChunksReady.DETAIL_TYPE: "index",
    UploadDeadline.DETAIL_TYPE: "uploads",
    DeliveryRequested.DETAIL_TYPE: "notify-deliveries",
}
