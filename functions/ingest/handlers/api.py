"""ingest-api: POST /v1/documents (accept a document) and GET /v1/documents/{document_id}.

Thin: validate (Powertools + the pydantic contracts), find the caller, call DocumentService, map
the result. Domain errors become HTTP here, in `_DOMAIN_STATUS`, and nowhere else; everything
else is ragline.http's. The Cognito authorizer rejects anonymous calls before they get here in
AWS; the 401 below is defence in depth (and runs after body validation, which Powertools does first).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import UnauthorizedError
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.ingest import wiring
from functions.ingest.domain.documents import DocumentService
from functions.ingest.domain.errors import (
    DocumentAlreadyExists,
    DocumentNotFound,
    DocumentTooLarge,
    EventPublishFailed,
    IngestError,
    UnsupportedBody,
)
from ragline.contracts import CreateDocumentRequest, CreateDocumentResponse, DocumentView, Principal, new_id
from ragline.http import error_response, install_error_handlers
from ragline.identity import principal_from_claims
from ragline.observability import logger as make_logger

CORRELATION_HEADER = "X-Correlation-Id"
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_DOMAIN_STATUS: dict[type[IngestError], HTTPStatus] = {
    DocumentTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    DocumentNotFound: HTTPStatus.NOT_FOUND,
    DocumentAlreadyExists: HTTPStatus.CONFLICT,
    EventPublishFailed: HTTPStatus.SERVICE_UNAVAILABLE,
    UnsupportedBody: HTTPStatus.UNPROCESSABLE_ENTITY,
}

logger = make_logger("ingest-api")


def create_app(document_service: Callable[[], DocumentService]) -> APIGatewayRestResolver:
    """The routes over whichever DocumentService the callable returns (built lazily, once)."""
    app = APIGatewayRestResolver(enable_validation=True)
    install_error_handlers(app, logger)

    @app.exception_handler(IngestError)
    def _domain_error(exc: IngestError) -> Response:
        status = next(
            (s for cls, s in _DOMAIN_STATUS.items() if isinstance(exc, cls)), HTTPStatus.INTERNAL_SERVER_ERROR
        )
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.exception("request failed", extra={"code": exc.code})
        return error_response(status, exc.code, str(exc))

    def caller() -> Principal:
        claims = app.current_event.request_context.authorizer.claims
        if not claims or not claims.get("sub"):
            raise UnauthorizedError("Authentication required")
        return principal_from_claims(claims)

    def correlation_id() -> str:
        event = app.current_event
        supplied = event.headers.get(CORRELATION_HEADER)  # case-insensitive
        if supplied and _CORRELATION_ID.match(supplied):
            return supplied
        return event.request_context.get("requestId") or new_id()

    @app.post("/v1/documents")
    def create_document(body: CreateDocumentRequest) -> Response[CreateDocumentResponse]:
        principal = caller()
        cid = correlation_id()
        logger.set_correlation_id(cid)
        document = document_service().create(body, principal, cid)
        logger.info(
            "document accepted", extra={"document_id": document.id, "size_bytes": document.size_bytes}
        )
        return Response(
            status_code=HTTPStatus.ACCEPTED,
            content_type=content_types.APPLICATION_JSON,
            body=CreateDocumentResponse(
                document_id=document.id, version=document.version, status=document.status, correlation_id=cid
            ),
            headers={CORRELATION_HEADER: cid},
        )

    @app.get("/v1/documents/<document_id>")
    def get_document(document_id: str) -> DocumentView:
        return DocumentView.of(document_service().get(document_id, caller()))

    return app


app = create_app(wiring.document_service)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
