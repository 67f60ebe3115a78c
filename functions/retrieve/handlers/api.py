"""POST /v1/search behind API Gateway (REST API, Cognito authorizer)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.exceptions import UnauthorizedError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.retrieve import wiring
from ragline.contracts import SearchRequest, SearchResponse
from ragline.http import install_error_handlers
from ragline.identity import principal_from_claims
from ragline.observability import logger as make_logger

logger = make_logger("retrieve")
app = APIGatewayRestResolver(enable_validation=True)
install_error_handlers(app, logger)


@app.post("/v1/search")
def search(request: SearchRequest) -> SearchResponse:
    claims = app.current_event.request_context.authorizer.claims
    if not claims.get("sub"):
        raise UnauthorizedError("No authenticated caller")
    principal = principal_from_claims(claims)
    logger.append_keys(user_id=principal.user_id)
    return wiring.service().search(principal, request)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
