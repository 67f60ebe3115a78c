"""Direct invocation (`lambda.invoke` from the context function): search on behalf of a principal
the caller already authenticated. Invalid payloads answer an ErrorResponse instead of raising, so
the caller gets a typed error; anything else raises and surfaces as the invocation's FunctionError."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from functions.retrieve import wiring
from functions.retrieve.domain.errors import EmbeddingUnavailable
from ragline.contracts import Principal, SearchRequest, Strict
from ragline.http import error_body, validation_details
from ragline.observability import logger as make_logger
from ragline.search.fields import InvalidFilter

logger = make_logger("retrieve")


class SearchInvocation(Strict):
    """The invocation payload. Its producer is the context function."""

    principal: Principal
    request: SearchRequest
    correlation_id: str | None = None


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        invocation = SearchInvocation.model_validate(event)
    except ValidationError as exc:
        logger.warning("invalid invocation payload", extra={"errors": exc.error_count()})
        return error_body(
            "validation_error", "The invocation payload is invalid", validation_details(exc.errors())
        )
    if invocation.correlation_id:
        logger.set_correlation_id(invocation.correlation_id)
    try:
        response = wiring.service().search(invocation.principal, invocation.request)
    except EmbeddingUnavailable as exc:
        return error_body(EmbeddingUnavailable.code, str(exc))
    except InvalidFilter as exc:
        return error_body(exc.code, exc.message)
    return response.model_dump(mode="json")
