"""Webhook POSTs with httpx, to checked addresses only (SSRF).

The name is resolved when a connection is opened, every address checked (domain/addresses.py), and
the connection made to the address that was checked: httpcore's network backend is the one place
that connects, so no second lookup (DNS rebinding) happens between check and connect. TLS still
verifies the certificate against the URL's host name. Redirects are never followed (a 3xx fails)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from functions.notify.adapters.dns import AddressPolicy, Resolve, resolve
from functions.notify.domain.addresses import check_url, pick_address
from functions.notify.domain.errors import DeliveryFailed

__all__ = ["AddressPolicy", "CheckedBackend", "CheckedTransport", "HttpWebhookSender", "Resolve", "resolve"]


class CheckedBackend(httpcore.SyncBackend):
    """Connects only to addresses the policy allows, the very address it checked."""

    def __init__(self, resolver: Resolve, *, allow_loopback: bool) -> None:
        self._resolve = resolver
        self._allow_loopback = allow_loopback

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        address = pick_address(host, self._resolve(host, port), allow_loopback=self._allow_loopback)
        return super().connect_tcp(str(address), port, timeout, local_address, socket_options)


class CheckedTransport(httpx.HTTPTransport):
    def __init__(self, resolver: Resolve, *, allow_loopback: bool) -> None:
        ctx = httpx.create_ssl_context()
        super().__init__(verify=ctx, trust_env=False)
        # The pool connects through CheckedBackend only; it has no proxy, and HttpWebhookSender's
        # Client (trust_env=False) takes none from the environment (a proxy would connect unchecked).
        self._pool = httpcore.ConnectionPool(
            ssl_context=ctx,
            network_backend=CheckedBackend(resolver, allow_loopback=allow_loopback),
        )


class HttpWebhookSender:
    def __init__(
        self, *, timeout_s: float, allow_loopback: bool = False, resolver: Resolve = resolve
    ) -> None:
        self._allow_loopback = allow_loopback
        self._client = httpx.Client(
            transport=CheckedTransport(resolver, allow_loopback=allow_loopback),
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
        )

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        check_url(url, allow_loopback=self._allow_loopback)
        # CheckedBackend's WebhookUrlRefused is no httpx error: httpx passes it on as itself.
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise DeliveryFailed(f"the receiver answered {response.status_code}")
