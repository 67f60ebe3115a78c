"""HTTP errors in one place: every API handler answers failures as `ErrorResponse`.

`install_error_handlers(app)` maps request validation to 422, Powertools' ServiceErrors (401, 404,
...) to their status, and anything else to a logged 500 that reveals nothing."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import ServiceError, UnauthorizedError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from ragline.contracts import ErrorBody, ErrorResponse, Principal
from ragline.identity import principal_from_claims

_log = logging.getLogger(__name__)

# Stable codes for the statuses Powertools' ServiceError subclasses carry.
_CODES = {
    HTTPStatus.BAD_REQUEST: "bad_request",
    HTTPStatus.UNAUTHORIZED: "unauthorized",
    HTTPStatus.FORBIDDEN: "forbidden",
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.REQUEST_TIMEOUT: "timeout",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "payload_too_large",
    HTTPStatus.INTERNAL_SERVER_ERROR: "internal_error",
    HTTPStatus.SERVICE_UNAVAILABLE: "unavailable",
}


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorBody(code=code, message=message, details=details or [])).model_dump(
        mode="json"
    )


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(error_body(code, message, details)),
    )


def is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


UNSUPPORTED_MEDIA_TYPE = (
    "unsupported_media_type",
    "The request body must be JSON, sent with Content-Type: application/json.",
)


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors without the rejected input or library URLs (they may echo secrets)."""
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "type": error.get("type"),
            "msg": error.get("msg"),
        }
        for error in errors
    ]


def _unreadable_json(body: str | None, is_base64: bool | None) -> str | None:
    """Why the body cannot be parsed as JSON text, if that is the reason; None otherwise."""
    try:
        json.loads(base64.b64decode(body or "").decode() if is_base64 else body or "null")
    except UnicodeDecodeError:
        return "The request body is not UTF-8 text."
    except RecursionError:
        return "The JSON body is nested too deeply."
    except ValueError:
        return None
    return None


def install_error_handlers(app: APIGatewayRestResolver, logger: Logger | None = None) -> None:
    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        # curl -d and HTML forms send form encoding by default; say so rather than list field errors.
        event = app.current_event
        if event.body and not is_json(event.headers.get("content-type")):
            return error_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, *UNSUPPORTED_MEDIA_TYPE)
        return error_response(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "validation_error",
            "The request is invalid",
            validation_details(exc.errors()),
        )

    # Bodies of a type Powertools cannot parse (text/plain, XML, ...).
    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported(exc: RequestUnsupportedContentType) -> Response:
        return error_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, *UNSUPPORTED_MEDIA_TYPE)

    # A body the JSON parser cannot read at all (not UTF-8, nested past its recursion limit) is the
    # caller's fault; the same errors from anywhere else stay a logged 500.
    @app.exception_handler([UnicodeDecodeError, RecursionError])
    def _unreadable(exc: Exception) -> Response:
        if reason := _unreadable_json(app.current_event.body, app.current_event.is_base64_encoded):
            return error_response(HTTPStatus.BAD_REQUEST, "invalid_json", reason)
        return _unexpected(exc)

    # NotFoundError (no route, or raised by a route) and UnauthorizedError are ServiceErrors.
    @app.exception_handler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return error_response(exc.status_code, _CODES.get(exc.status_code, "error"), exc.msg)

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        (logger or _log).exception("unhandled error")
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "Internal server error")


def install_domain_errors(
    app: APIGatewayRestResolver,
    logger: Logger,
    base: type[Exception],
    statuses: Mapping[type[Exception], HTTPStatus],
) -> None:
    """A context's domain errors (subclasses of `base`, each with a stable `code`) as ErrorResponses,
    with the status of the first class in `statuses` they are; any other is a 500, logged."""

    @app.exception_handler(base)
    def _domain_error(exc: Exception) -> Response:
        status = next(
            (s for cls, s in statuses.items() if isinstance(exc, cls)), HTTPStatus.INTERNAL_SERVER_ERROR
        )
        code = getattr(exc, "code", "internal_error")
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.exception("request failed", extra={"code": code})
        return error_response(status, code, str(exc))


def caller(app: APIGatewayRestResolver) -> Principal:
    """Who is calling, from the claims the authorizer verified (401 when there are none)."""
    claims = app.current_event.request_context.authorizer.claims
    if not claims or not claims.get("sub"):
        raise UnauthorizedError("Authentication required")
    return principal_from_claims(claims)
