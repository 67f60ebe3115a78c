"""notify-api: POST /v1/subscriptions (201 with the signing secret, shown this once),
GET /v1/subscriptions (the caller's), GET and DELETE /v1/subscriptions/{subscription_id}.

Thin: validate (Powertools + the pydantic contracts), find the caller, call SubscriptionService.
Domain errors become HTTP here and nowhere else; everything else is ragline.http's."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.notify import wiring
from functions.notify.domain.errors import NotifyError, SubscriptionNotFound, WebhookUrlRefused
from functions.notify.domain.subscriptions import SubscriptionService
from ragline.contracts import (
    CreatedSubscription,
    CreateSubscriptionRequest,
    Principal,
    Subscription,
    SubscriptionList,
)
from ragline.http import caller as http_caller
from ragline.http import install_domain_errors, install_error_handlers
from ragline.observability import logger as make_logger

logger = make_logger("notify-api")
_DOMAIN_STATUS: dict[type[NotifyError], HTTPStatus] = {
    SubscriptionNotFound: HTTPStatus.NOT_FOUND,
    WebhookUrlRefused: HTTPStatus.UNPROCESSABLE_ENTITY,
}


def create_app(service: Callable[[], SubscriptionService]) -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)
    install_error_handlers(app, logger)

    install_domain_errors(app, logger, NotifyError, _DOMAIN_STATUS)

    def caller() -> Principal:
        return http_caller(app)

    @app.post("/v1/subscriptions")
    def create_subscription(body: CreateSubscriptionRequest) -> Response[CreatedSubscription]:
        created = service().create(caller(), body)
        return Response(
            status_code=HTTPStatus.CREATED, content_type=content_types.APPLICATION_JSON, body=created
        )

    @app.get("/v1/subscriptions")
    def list_subscriptions() -> SubscriptionList:
        return SubscriptionList(items=service().list(caller()))

    @app.get("/v1/subscriptions/<subscription_id>")
    def get_subscription(subscription_id: str) -> Subscription:
        return service().get(caller(), subscription_id)

    @app.delete("/v1/subscriptions/<subscription_id>")
    def delete_subscription(subscription_id: str) -> Response[None]:
        service().delete(caller(), subscription_id)
        return Response(
            status_code=HTTPStatus.NO_CONTENT, content_type=content_types.APPLICATION_JSON, body=""
        )

    return app


app = create_app(wiring.subscription_service)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
