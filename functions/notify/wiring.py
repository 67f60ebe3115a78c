"""Builds notify's services once per process from settings; tests call the builders with their own parts."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from functions.notify.adapters.dns import AddressPolicy
from functions.notify.adapters.email import SesEmailSender
from functions.notify.adapters.subscriptions_table import DynamoSecretStore, DynamoSubscriptionRepository
from functions.notify.domain.delivery import Deliverer, Fanout
from functions.notify.domain.subscriptions import SubscriptionService
from ragline import aws
from ragline.events import EventBridgePublisher, SqsSender
from ragline.settings import Settings, get_settings


def subscriptions(settings: Settings, dynamodb: Any) -> DynamoSubscriptionRepository:
    return DynamoSubscriptionRepository(dynamodb, settings.subscriptions_table)


def secrets(settings: Settings, dynamodb: Any) -> DynamoSecretStore:
    return DynamoSecretStore(dynamodb, settings.webhook_secrets_table)


def build_subscription_service(settings: Settings) -> SubscriptionService:
    dynamodb = aws.client("dynamodb", settings)
    return SubscriptionService(
        subscriptions(settings, dynamodb),
        secrets(settings, dynamodb),
        AddressPolicy(allow_loopback=settings.webhook_allow_loopback),
    )


def build_fanout(settings: Settings) -> Fanout:
    if settings.deliveries_queue_url is None:
        raise RuntimeError("RAGLINE_DELIVERIES_QUEUE_URL is not set")
    return Fanout(
        subscriptions(settings, aws.client("dynamodb", settings)),
        SqsSender(aws.client("sqs", settings), settings.deliveries_queue_url),
    )


def build_deliverer(settings: Settings) -> Deliverer:
    # httpx is imported here only: notify-api and notify-fanout post no webhooks.
    from functions.notify.adapters.http import HttpWebhookSender

    dynamodb = aws.client("dynamodb", settings)
    return Deliverer(
        subscriptions(settings, dynamodb),
        secrets(settings, dynamodb),
        HttpWebhookSender(
            timeout_s=settings.webhook_timeout_s, allow_loopback=settings.webhook_allow_loopback
        ),
        SesEmailSender(aws.client("ses", settings), settings.notify_email_sender),
        EventBridgePublisher(aws.client("events", settings), settings.event_bus),
        backoff_base_s=settings.webhook_backoff_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        disable_after=settings.webhook_disable_after,
    )


@lru_cache(maxsize=1)
def subscription_service() -> SubscriptionService:
    return build_subscription_service(get_settings())


@lru_cache(maxsize=1)
def fanout() -> Fanout:
    return build_fanout(get_settings())


@lru_cache(maxsize=1)
def deliverer() -> Deliverer:
    return build_deliverer(get_settings())


@lru_cache(maxsize=1)
def sqs_client() -> object:
    return aws.client("sqs", get_settings())
