"""Webhook POSTs with httpx, to checked addresses only (SSRF).

The name is resolved when a connection is opened, every address checked (domain/addresses.py), and
the connection made to the address that was checked: httpcore's network backend is the one place
that connects, so no second lookup (DNS rebinding) happens between check and connect. TLS still
verifies the certificate against the URL's host name. Redirects are never followed (a 3xx fails)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

from functions.notify.domain.addresses import IpAddress, check_url, pick_address
from functions.notify.domain.errors import DeliveryFailed, WebhookUrlRefused

Resolve = Callable[[str, int], list[IpAddress]]


def resolve(host: str, port: int) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookUrlRefused(f"{host} does not resolve") from exc
    # scope ids (fe80::1%eth0) are not part of the address
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


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
        super().__init__(trust_env=False)  # no proxy from the environment: it would connect for us
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=CheckedBackend(resolver, allow_loopback=allow_loopback),
        )


class AddressPolicy:
    """The subscriptions API's check of a new webhook URL: its form, and where it resolves now."""

    def __init__(self, *, allow_loopback: bool = False, resolver: Resolve = resolve) -> None:
        self._allow_loopback = allow_loopback
        self._resolve = resolver

    def check(self, url: str) -> None:
        host, port = check_url(url, allow_loopback=self._allow_loopback)
        pick_address(host, self._resolve(host, port), allow_loopback=self._allow_loopback)


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
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # the refusal from CheckedBackend arrives wrapped, or as itself
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, WebhookUrlRefused):
                raise cause from None
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise DeliveryFailed(f"the receiver answered {response.status_code}")

    def close(self) -> None:
        self._client.close()
