"""Notify's domain errors; the API maps them to HTTP in one place (handlers/api.py)."""

from __future__ import annotations


class NotifyError(Exception):
    code = "notify_error"


class SubscriptionNotFound(NotifyError):
    code = "subscription_not_found"


class WebhookUrlRefused(NotifyError):
    """The URL may not receive webhooks: not HTTPS, or its host is (or resolves to) an address
    Ragline refuses to call (private, loopback, link-local, cloud metadata, ...)."""

    code = "webhook_url_refused"


class DeliveryFailed(NotifyError):
    """One attempt did not reach the receiver, or the receiver did not answer 2xx."""

    code = "delivery_failed"
