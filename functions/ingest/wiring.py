"""Builds ingest's adapters and services from settings, once per container.

Each function needs only its own service (the API never loads the tokenizer, the status consumer
needs only the table), so there is one builder and one cached accessor per service:

    document_service()  -> DocumentService   (ingest-api)
    chunking_service()  -> ChunkingService   (ingest-worker)
    status_service()    -> StatusService     (ingest-status)
    upload_service()    -> UploadService     (ingest-api for `upload: true`, ingest-object-created;
                                             both send UploadDeadline to RAGLINE_UPLOADS_QUEUE_URL)
    collection_catalog() -> CollectionCatalog (ingest-api; documents and chunking use their own)
    idempotent_requests() -> IdempotentRequests (ingest-api: the Idempotency-Key store)
    deletion_requests() -> DeletionRequests  (ingest-api: DELETE /v1/documents/{id}, operations)
    delete_saga()       -> DeleteSaga        (ingest-saga: ingest's steps of the delete saga)
    update_requests()   -> UpdateRequests    (ingest-api: PUT /v1/documents/{id})
    update_saga()       -> UpdateSaga        (ingest-saga: ingest's steps of the update saga)
    reconciler()        -> Reconciler        (ingest-reconcile: the table against the index)

The accessors build on first use from `get_settings()` and keep the result for the container's life.
Tests call the `build_*` functions (or `build`, for all three) with moto-backed clients or fakes and
hand the result to the handler factories; nothing patches this module."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from botocore.config import Config

from functions.ingest.adapters.blob_store import S3BlobStore
from functions.ingest.adapters.collections_table import DynamoCollectionRepository
from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.adapters.executions import StepFunctionsStarter
from functions.ingest.adapters.idempotency import IdempotentRequests
from functions.ingest.adapters.index_maintenance import LambdaIndexMaintenance
from functions.ingest.adapters.operations_table import DynamoOperationRepository
from functions.ingest.adapters.upload_records import DynamoUploadRecords
from functions.ingest.domain.chunking import Chunker, TokenCounter
from functions.ingest.domain.collections import CollectionCatalog, CollectionDefaults
from functions.ingest.domain.deletion import DeleteSaga, DeletionRequests
from functions.ingest.domain.documents import DocumentService
from functions.ingest.domain.pipeline import ChunkingService, VersionChunker
from functions.ingest.domain.ports import DocumentRepository, EventPublisher, IndexMaintenance, MessageSender
from functions.ingest.domain.reconcile import ANNOUNCE_AFTER, Reconciler
from functions.ingest.domain.status import StatusService
from functions.ingest.domain.updates import UpdateRequests, UpdateSaga
from functions.ingest.domain.uploads import DeadlineQueue, UploadService
from ragline import aws
from ragline.events import EventBridgePublisher, SqsSender
from ragline.search.fields import FilterableFields
from ragline.settings import Settings, get_settings
from ragline.topology import TOPOLOGY


def _documents(settings: Settings, dynamodb: Any) -> DocumentRepository:
    return DynamoDocumentRepository(dynamodb or aws.client("dynamodb", settings), settings.documents_table)


def build_collection_catalog(settings: Settings, *, dynamodb: Any = None) -> CollectionCatalog:
    """Collections; `default` has the deployment's chunk settings and embedding model."""
    return CollectionCatalog(
        DynamoCollectionRepository(dynamodb or aws.client("dynamodb", settings), settings.collections_table),
        CollectionDefaults(
            chunk_max_tokens=settings.chunk_max_tokens,
            chunk_overlap_tokens=settings.chunk_overlap_tokens,
            embedding_model=settings.embedding_model,
            embedding_max_tokens=settings.embedding_max_tokens,
        ),
    )


def build_idempotent_requests(settings: Settings, *, dynamodb: Any = None) -> IdempotentRequests:
    return IdempotentRequests(
        dynamodb or aws.client("dynamodb", settings),
        settings.idempotency_table,
        ttl_s=settings.idempotency_ttl_s,
    )


def build_deletion_requests(
    settings: Settings, *, dynamodb: Any = None, stepfunctions: Any = None
) -> DeletionRequests:
    """Without RAGLINE_DELETE_STATE_MACHINE_ARN deletes are refused (503 operation_not_started)."""
    dynamodb = dynamodb or aws.client("dynamodb", settings)
    executions = None
    if settings.delete_state_machine_arn:
        executions = StepFunctionsStarter(
            stepfunctions or aws.client("stepfunctions", settings), settings.delete_state_machine_arn
        )
    return DeletionRequests(
        DynamoDocumentRepository(dynamodb, settings.documents_table),
        DynamoOperationRepository(dynamodb, settings.operations_table),
        executions,
        ttl=timedelta(days=settings.operation_ttl_days),
    )


def build_delete_saga(
    settings: Settings,
    *,
    s3: Any = None,
    dynamodb: Any = None,
    events: Any = None,
    publisher: EventPublisher | None = None,
) -> DeleteSaga:
    s3 = s3 or aws.client("s3", settings)
    dynamodb = dynamodb or aws.client("dynamodb", settings)
    return DeleteSaga(
        DynamoDocumentRepository(dynamodb, settings.documents_table),
        DynamoOperationRepository(dynamodb, settings.operations_table),
        S3BlobStore(s3, settings.raw_bucket),
        S3BlobStore(s3, settings.parsed_bucket),
        publisher or _publisher(settings, events),
    )


def build_update_requests(
    settings: Settings, *, s3: Any = None, dynamodb: Any = None, stepfunctions: Any = None
) -> UpdateRequests:
    """Without RAGLINE_UPDATE_STATE_MACHINE_ARN updates are refused (503 operation_not_started)."""
    dynamodb = dynamodb or aws.client("dynamodb", settings)
    executions = None
    if settings.update_state_machine_arn:
        executions = StepFunctionsStarter(
            stepfunctions or aws.client("stepfunctions", settings), settings.update_state_machine_arn
        )
    return UpdateRequests(
        DynamoDocumentRepository(dynamodb, settings.documents_table),
        DynamoOperationRepository(dynamodb, settings.operations_table),
        S3BlobStore(s3 or aws.client("s3", settings), settings.raw_bucket),
        executions,
        ttl=timedelta(days=settings.operation_ttl_days),
        max_inline_bytes=min(settings.max_inline_bytes, settings.max_document_bytes),
        metadata_fields=FilterableFields(settings.metadata_fields),
    )


def build_update_saga(
    settings: Settings,
    *,
    s3: Any = None,
    dynamodb: Any = None,
    events: Any = None,
    tokenizer: TokenCounter | None = None,
    publisher: EventPublisher | None = None,
) -> UpdateSaga:
    s3 = s3 or aws.client("s3", settings)
    dynamodb = dynamodb or aws.client("dynamodb", settings)
    raw, parsed = S3BlobStore(s3, settings.raw_bucket), S3BlobStore(s3, settings.parsed_bucket)
    return UpdateSaga(
        DynamoDocumentRepository(dynamodb, settings.documents_table),
        DynamoOperationRepository(dynamodb, settings.operations_table),
        raw,
        parsed,
        publisher or _publisher(settings, events),
        VersionChunker(
            raw,
            parsed,
            Chunker(
                tokenizer or default_tokenizer(settings),
                settings.chunk_max_tokens,
                settings.chunk_overlap_tokens,
            ),
            collections=build_collection_catalog(settings, dynamodb=dynamodb),
            max_document_bytes=settings.max_document_bytes,
        ),
    )


INDEX_MAINTENANCE_TIMEOUT_S = TOPOLOGY.function("index-maintenance").timeout_s


def build_reconciler(
    settings: Settings,
    *,
    dynamodb: Any = None,
    events: Any = None,
    lambda_client: Any = None,
    index: IndexMaintenance | None = None,
    announce_after: timedelta = ANNOUNCE_AFTER,
) -> Reconciler:
    """The index is reached through its context's `index-maintenance` function (Lambda Invoke;
    locally the emulator at RAGLINE_LAMBDA_ENDPOINT_URL)."""
    dynamodb = dynamodb or aws.client("dynamodb", settings)
    if index is None:
        # A restore embeds a whole document: wait as long as the maintenance function may run.
        wait = Config(read_timeout=INDEX_MAINTENANCE_TIMEOUT_S + 10)
        client = lambda_client or aws.client(
            "lambda", settings, endpoint_url=settings.lambda_endpoint_url, config=wait
        )
        index = LambdaIndexMaintenance(client, settings.index_maintenance_function)
    return Reconciler(
        DynamoDocumentRepository(dynamodb, settings.documents_table),
        DynamoOperationRepository(dynamodb, settings.operations_table),
        index,
        _publisher(settings, events),
        announce_after=announce_after,
    )


def _publisher(settings: Settings, events: Any) -> EventPublisher:
    return EventBridgePublisher(events or aws.client("events", settings), settings.event_bus)


def default_tokenizer(settings: Settings) -> TokenCounter:
    from ragline.tokenizer import HfTokenCounter

    if not settings.embedding_tokenizer:
        raise ValueError("RAGLINE_EMBEDDING_TOKENIZER must point at the embedding model's tokenizer.json")
    return HfTokenCounter.from_file(settings.embedding_tokenizer)


def build_document_service(
    settings: Settings,
    *,
    s3: Any = None,
    dynamodb: Any = None,
    events: Any = None,
    publisher: EventPublisher | None = None,
) -> DocumentService:
    return DocumentService(
        _documents(settings, dynamodb),
        S3BlobStore(s3 or aws.client("s3", settings), settings.raw_bucket),
        publisher or _publisher(settings, events),
        max_inline_bytes=min(settings.max_inline_bytes, settings.max_document_bytes),
        collections=build_collection_catalog(settings, dynamodb=dynamodb),
        metadata_fields=FilterableFields(settings.metadata_fields),
    )


def build_chunking_service(
    settings: Settings,
    *,
    s3: Any = None,
    dynamodb: Any = None,
    events: Any = None,
    sqs: Any = None,
    tokenizer: TokenCounter | None = None,
    publisher: EventPublisher | None = None,
    index_queue: MessageSender | None = None,
) -> ChunkingService:
    s3 = s3 or aws.client("s3", settings)
    if index_queue is None:
        if not settings.index_queue_url:
            raise ValueError("RAGLINE_INDEX_QUEUE_URL is required by the ingest worker")
        index_queue = SqsSender(sqs or aws.client("sqs", settings), settings.index_queue_url)
    return ChunkingService(
        _documents(settings, dynamodb),
        S3BlobStore(s3, settings.raw_bucket),
        S3BlobStore(s3, settings.parsed_bucket),
        publisher or _publisher(settings, events),
        index_queue,
        Chunker(
            tokenizer or default_tokenizer(settings), settings.chunk_max_tokens, settings.chunk_overlap_tokens
        ),
        collections=build_collection_catalog(settings, dynamodb=dynamodb),
        max_document_bytes=settings.max_document_bytes,
    )


def build_status_service(settings: Settings, *, dynamodb: Any = None) -> StatusService:
    return StatusService(_documents(settings, dynamodb))


# botocore presigns S3 URLs with SigV2 unless told otherwise; only SigV4 signs the Content-Length.
PRESIGN_CONFIG = Config(signature_version="s3v4")


def build_upload_service(
    settings: Settings,
    *,
    presign_s3: Any = None,
    dynamodb: Any = None,
    events: Any = None,
    sqs: Any = None,
    publisher: EventPublisher | None = None,
    deadlines: DeadlineQueue | None = None,
) -> UploadService:
    """`presign_s3`: an S3 client built with PRESIGN_CONFIG (by default one is built from settings).
    `deadlines`: by default the uploads queue (RAGLINE_UPLOADS_QUEUE_URL); without one, the service
    refuses presigned uploads (503 upload_not_scheduled) rather than hand out a URL nothing expires."""
    dynamodb = dynamodb or aws.client("dynamodb", settings)
    if deadlines is None and settings.uploads_queue_url:
        deadlines = SqsSender(sqs or aws.client("sqs", settings), settings.uploads_queue_url)
    return UploadService(
        _documents(settings, dynamodb),
        DynamoUploadRecords(dynamodb, settings.documents_table),
        S3BlobStore(presign_s3 or aws.client("s3", settings, config=PRESIGN_CONFIG), settings.raw_bucket),
        publisher or _publisher(settings, events),
        bucket=settings.raw_bucket,
        max_document_bytes=settings.max_document_bytes,
        url_ttl_s=settings.upload_url_ttl_s,
        deadlines=deadlines,
        grace_s=settings.upload_grace_s,
        collections=build_collection_catalog(settings, dynamodb=dynamodb),
        metadata_fields=FilterableFields(settings.metadata_fields),
    )


@dataclass(frozen=True)
class IngestServices:
    documents: DocumentService
    chunking: ChunkingService
    status: StatusService
    uploads: UploadService
    collections: CollectionCatalog
    idempotency: IdempotentRequests


def build(
    settings: Settings,
    *,
    s3: Any = None,
    dynamodb: Any = None,
    events: Any = None,
    sqs: Any = None,
    tokenizer: TokenCounter | None = None,
    publisher: EventPublisher | None = None,
    index_queue: MessageSender | None = None,
) -> IngestServices:
    """All the services over the same clients (tests, the local platform); uploads presign with
    their own SigV4 S3 client, built from settings."""
    s3 = s3 or aws.client("s3", settings)
    dynamodb = dynamodb or aws.client("dynamodb", settings)
    events = events or aws.client("events", settings)
    return IngestServices(
        documents=build_document_service(
            settings, s3=s3, dynamodb=dynamodb, events=events, publisher=publisher
        ),
        chunking=build_chunking_service(
            settings,
            s3=s3,
            dynamodb=dynamodb,
            events=events,
            sqs=sqs,
            tokenizer=tokenizer,
            publisher=publisher,
            index_queue=index_queue,
        ),
        status=build_status_service(settings, dynamodb=dynamodb),
        uploads=build_upload_service(
            settings, dynamodb=dynamodb, events=events, sqs=sqs, publisher=publisher
        ),
        collections=build_collection_catalog(settings, dynamodb=dynamodb),
        idempotency=build_idempotent_requests(settings, dynamodb=dynamodb),
    )


# One client per AWS service for the whole process: an ingest-api cold start wires several services,
# and building a boto3 client for each of them repeats the same work.
@cache
def _client(service: str) -> Any:
    return aws.client(service, get_settings())


@cache
def document_service() -> DocumentService:
    return build_document_service(
        get_settings(), s3=_client("s3"), dynamodb=_client("dynamodb"), events=_client("events")
    )


@cache
def chunking_service() -> ChunkingService:
    return build_chunking_service(
        get_settings(),
        s3=_client("s3"),
        dynamodb=_client("dynamodb"),
        events=_client("events"),
        sqs=_client("sqs"),
    )


@cache
def status_service() -> StatusService:
    return build_status_service(get_settings(), dynamodb=_client("dynamodb"))


@cache
def upload_service() -> UploadService:
    return build_upload_service(
        get_settings(), dynamodb=_client("dynamodb"), events=_client("events"), sqs=_client("sqs")
    )


@cache
def collection_catalog() -> CollectionCatalog:
    return build_collection_catalog(get_settings(), dynamodb=_client("dynamodb"))


@cache
def idempotent_requests() -> IdempotentRequests:
    return build_idempotent_requests(get_settings(), dynamodb=_client("dynamodb"))


@cache
def deletion_requests() -> DeletionRequests:
    return build_deletion_requests(
        get_settings(), dynamodb=_client("dynamodb"), stepfunctions=_client("stepfunctions")
    )


@cache
def delete_saga() -> DeleteSaga:
    return build_delete_saga(
        get_settings(), s3=_client("s3"), dynamodb=_client("dynamodb"), events=_client("events")
    )


@cache
def update_requests() -> UpdateRequests:
    return build_update_requests(
        get_settings(), s3=_client("s3"), dynamodb=_client("dynamodb"), stepfunctions=_client("stepfunctions")
    )


@cache
def update_saga() -> UpdateSaga:
    return build_update_saga(
        get_settings(), s3=_client("s3"), dynamodb=_client("dynamodb"), events=_client("events")
    )


@cache
def reconciler() -> Reconciler:
    return build_reconciler(get_settings(), dynamodb=_client("dynamodb"), events=_client("events"))
