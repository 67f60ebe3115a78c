"""ingest-api: POST /v1/documents (accept a document), GET /v1/documents (list),
GET /v1/documents/{document_id}, PUT /v1/documents/{document_id} (202 with the operation and the new
version; the update saga runs it), DELETE /v1/documents/{document_id} (202 with the operation; the
delete saga runs it, docs/saga.md), GET /v1/operations/{operation_id}, POST /v1/collections,
GET /v1/collections (list) and GET /v1/collections/{name}.

Thin: validate (Powertools + the pydantic contracts), find the caller, call DocumentService, map
the result. Domain errors become HTTP here, in `_DOMAIN_STATUS`, and nowhere else; everything
else is ragline.http's. The Cognito authorizer rejects anonymous calls before they get here in
AWS; the 401 below is defence in depth (and runs after body validation, which Powertools does first).

POST /v1/documents answers 202 for a new document and 200 (`deduplicated: true`) for identical
content already in the collection. With an `Idempotency-Key` header the first response is stored
(per caller and key, for RAGLINE_IDEMPOTENCY_TTL_S) and replayed for the same body; another body
with the same key is 409 `idempotency_key_reused`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.ingest import wiring
from functions.ingest.adapters.idempotency import IdempotentRequests
from functions.ingest.domain.collections import CollectionCatalog
from functions.ingest.domain.deletion import DeletionRequests
from functions.ingest.domain.documents import DocumentService
from functions.ingest.domain.errors import (
    ChunkTooLarge,
    CollectionAlreadyExists,
    CollectionNotFound,
    ContentTypeMismatch,
    ContentTypeRequired,
    DocumentAlreadyExists,
    DocumentBusy,
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    EventPublishFailed,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IngestError,
    InvalidBase64,
    InvalidCursor,
    InvalidMetadata,
    OperationNotFound,
    OperationNotStarted,
    UnsupportedBody,
    UnsupportedContentType,
    UnsupportedEmbeddingModel,
    UploadNotScheduled,
)
from functions.ingest.domain.updates import UpdateRequests
from functions.ingest.domain.uploads import UploadService
from ragline.contracts import (
    Collection,
    CollectionList,
    CollectionName,
    CreateCollectionRequest,
    CreateDocumentRequest,
    CreateDocumentResponse,
    DocumentList,
    DocumentStatus,
    DocumentView,
    Operation,
    Principal,
    UpdateDocumentRequest,
    new_id,
)
from ragline.http import caller as http_caller
from ragline.http import install_domain_errors, install_error_handlers
from ragline.observability import logger as make_logger

CORRELATION_HEADER = "X-Correlation-Id"
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,255}$"  # printable ASCII without spaces (UUIDs, ULIDs, ...)
# DELETE and PUT: the key names the operation they start.
OperationKey = Annotated[
    str | None,
    Header(pattern=IDEMPOTENCY_KEY, description="Makes retries safe: the same key gets the same operation"),
]


def _accepted(operation: Operation, correlation_id: str) -> Response[Operation]:
    """202 for an operation a saga runs, with where to follow it."""
    return Response(
        status_code=HTTPStatus.ACCEPTED,
        content_type=content_types.APPLICATION_JSON,
        body=operation,
        headers={"Location": f"/v1/operations/{operation.operation_id}", CORRELATION_HEADER: correlation_id},
    )


_DOMAIN_STATUS: dict[type[IngestError], HTTPStatus] = {
    DocumentTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    DocumentNotFound: HTTPStatus.NOT_FOUND,
    DocumentAlreadyExists: HTTPStatus.CONFLICT,
    EventPublishFailed: HTTPStatus.SERVICE_UNAVAILABLE,
    UploadNotScheduled: HTTPStatus.SERVICE_UNAVAILABLE,
    UnsupportedBody: HTTPStatus.UNPROCESSABLE_ENTITY,
    ContentTypeRequired: HTTPStatus.UNPROCESSABLE_ENTITY,
    InvalidMetadata: HTTPStatus.UNPROCESSABLE_ENTITY,
    CollectionNotFound: HTTPStatus.NOT_FOUND,
    CollectionAlreadyExists: HTTPStatus.CONFLICT,
    UnsupportedEmbeddingModel: HTTPStatus.UNPROCESSABLE_ENTITY,
    ChunkTooLarge: HTTPStatus.UNPROCESSABLE_ENTITY,
    InvalidCursor: HTTPStatus.BAD_REQUEST,
    IdempotencyKeyReused: HTTPStatus.CONFLICT,
    IdempotencyKeyInProgress: HTTPStatus.CONFLICT,
    OperationNotFound: HTTPStatus.NOT_FOUND,
    OperationNotStarted: HTTPStatus.SERVICE_UNAVAILABLE,
    DocumentBusy: HTTPStatus.CONFLICT,
    # What the bytes are, decided at upload when it can be (later failures become a failed status).
    UnsupportedContentType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    ContentTypeMismatch: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    EncryptedDocument: HTTPStatus.UNPROCESSABLE_ENTITY,
    EmptyDocument: HTTPStatus.UNPROCESSABLE_ENTITY,
    InvalidBase64: HTTPStatus.UNPROCESSABLE_ENTITY,
}

logger = make_logger("ingest-api")


def create_app(
    document_service: Callable[[], DocumentService],
    upload_service: Callable[[], UploadService] | None = None,
    *,
    collections: Callable[[], CollectionCatalog] = wiring.collection_catalog,
    idempotency: Callable[[], IdempotentRequests] = wiring.idempotent_requests,
    deletions: Callable[[], DeletionRequests] = wiring.deletion_requests,
    updates: Callable[[], UpdateRequests] = wiring.update_requests,
) -> APIGatewayRestResolver:
    """The routes over whichever services the callables return (built lazily, once). Without an
    upload service, `upload: true` requests get 422 unsupported_body."""
    app = APIGatewayRestResolver(enable_validation=True)
    install_error_handlers(app, logger)

    install_domain_errors(app, logger, IngestError, _DOMAIN_STATUS)

    def caller() -> Principal:
        return http_caller(app)

    def correlation_id() -> str:
        event = app.current_event
        supplied = event.headers.get(CORRELATION_HEADER)  # case-insensitive
        if supplied and _CORRELATION_ID.match(supplied):
            return supplied
        return event.request_context.get("requestId") or new_id()

    @app.post("/v1/documents")
    def create_document(
        body: CreateDocumentRequest,
        idempotency_key: Annotated[
            str | None,
            Header(
                pattern=IDEMPOTENCY_KEY,
                description="Makes retries safe: the same key and body get the first response again",
            ),
        ] = None,
    ) -> Response[CreateDocumentResponse]:
        principal = caller()
        cid = correlation_id()
        logger.set_correlation_id(cid)

        def accept() -> dict[str, Any]:
            upload, deduplicated = None, False
            if body.upload:
                if upload_service is None:
                    raise UnsupportedBody("presigned uploads are not enabled here")
                document, upload = upload_service().start(body, principal, cid)
            else:
                accepted = document_service().create(body, principal, cid)
                document, deduplicated = accepted.document, accepted.deduplicated
            logger.info(
                "document deduplicated" if deduplicated else "document accepted",
                extra={"document_id": document.id, "size_bytes": document.size_bytes},
            )
            response = CreateDocumentResponse(
                document_id=document.id,
                version=document.version,
                status=document.status,
                correlation_id=cid,
                deduplicated=deduplicated,
                upload=upload,
            )
            status = HTTPStatus.OK if deduplicated else HTTPStatus.ACCEPTED
            return {"status": int(status), "body": response.model_dump(mode="json")}

        if idempotency_key is None:
            result = accept()
        else:
            result = idempotency().run(
                caller=f"{principal.tenant or ''}/{principal.user_id}",
                key=idempotency_key,
                body=body.model_dump(mode="json"),
                compute=accept,
                context=app.lambda_context,
            )
        response = CreateDocumentResponse.model_validate(result["body"])
        return Response(
            status_code=result["status"],
            content_type=content_types.APPLICATION_JSON,
            body=response,
            headers={CORRELATION_HEADER: response.correlation_id},
        )

    @app.get("/v1/documents")
    def list_documents(
        collection: Annotated[CollectionName | None, Query(description="Only this collection's")] = None,
        status: Annotated[DocumentStatus | None, Query(description="Only documents in this status")] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="Documents per page")] = 20,
        cursor: Annotated[
            str | None, Query(max_length=1024, description="`next_cursor` of the previous page")
        ] = None,
    ) -> DocumentList:
        listing = document_service().list(
            caller(), collection=collection, status=status, limit=limit, cursor=cursor
        )
        return DocumentList(
            items=[DocumentView.of(d) for d in listing.documents], next_cursor=listing.next_cursor
        )

    @app.get("/v1/documents/<document_id>")
    def get_document(document_id: str) -> DocumentView:
        return DocumentView.of(document_service().get(document_id, caller()))

    @app.delete("/v1/documents/<document_id>")
    def delete_document(
        document_id: str,
        idempotency_key: OperationKey = None,
    ) -> Response[Operation]:
        principal = caller()
        cid = correlation_id()
        logger.set_correlation_id(cid)
        operation = deletions().delete(document_id, principal, cid, idempotency_key=idempotency_key)
        logger.info(
            "delete accepted",
            extra={"document_id": document_id, "operation_id": operation.operation_id},
        )
        return _accepted(operation, cid)

    @app.put("/v1/documents/<document_id>")
    def update_document(
        document_id: str,
        body: UpdateDocumentRequest,
        idempotency_key: OperationKey = None,
    ) -> Response[Operation]:
        principal = caller()
        cid = correlation_id()
        logger.set_correlation_id(cid)
        operation = updates().update(document_id, body, principal, cid, idempotency_key=idempotency_key)
        logger.info(
            "update accepted",
            extra={
                "document_id": document_id,
                "operation_id": operation.operation_id,
                "version": operation.version,
            },
        )
        return _accepted(operation, cid)

    @app.get("/v1/operations/<operation_id>")
    def get_operation(operation_id: str) -> Operation:
        return deletions().get(operation_id, caller())

    @app.post("/v1/collections")
    def create_collection(body: CreateCollectionRequest) -> Response[Collection]:
        collection = collections().create(body, caller())
        logger.info("collection created", extra={"collection": collection.name})
        return Response(
            status_code=HTTPStatus.CREATED, content_type=content_types.APPLICATION_JSON, body=collection
        )

    @app.get("/v1/collections")
    def list_collections() -> CollectionList:
        return CollectionList(items=collections().list(caller()))

    @app.get("/v1/collections/<name>")
    def get_collection(name: str) -> Collection:
        return collections().get(name, caller())

    return app


app = create_app(wiring.document_service, wiring.upload_service)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
