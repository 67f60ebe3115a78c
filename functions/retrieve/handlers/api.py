"""POST /v1/search behind API Gateway (REST API, Cognito authorizer)."""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.retrieve import wiring
from functions.retrieve.domain.errors import EmbeddingUnavailable
from ragline.contracts import SearchRequest, SearchResponse
from ragline.http import caller, error_response, install_error_handlers
from ragline.observability import logger as make_logger
from ragline.search.fields import InvalidFilter
from ragline.settings import get_settings

logger = make_logger("retrieve")
app = APIGatewayRestResolver(enable_validation=True)
install_error_handlers(app, logger)


@app.exception_handler(EmbeddingUnavailable)
def _embedding_unavailable(exc: EmbeddingUnavailable) -> Response:
    response = error_response(
        HTTPStatus.SERVICE_UNAVAILABLE,
        EmbeddingUnavailable.code,
        "The query cannot be embedded right now; retry later or search with mode keyword",
    )
    # About when an open circuit lets a probe through: sooner would mostly fail fast again.
    response.headers["Retry-After"] = str(math.ceil(get_settings().breaker_open_s))
    return response


@app.exception_handler(InvalidFilter)
def _invalid_filter(exc: InvalidFilter) -> Response:
    return error_response(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        exc.code,
        exc.message,
        [{"loc": ["body", "metadata", exc.field], "type": exc.code, "msg": exc.message}],
    )


@app.post("/v1/search")
def search(request: SearchRequest) -> SearchResponse:
    principal = caller(app)
    logger.append_keys(user_id=principal.user_id)
    return wiring.service().search(principal, request)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
