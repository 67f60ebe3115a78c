"""Name resolution for the SSRF checks, and the subscriptions API's check of a new webhook URL.

Kept apart from http.py so that notify-api and notify-fanout, which post nothing, do not import httpx."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from functions.notify.domain.addresses import IpAddress, check_url, pick_address
from functions.notify.domain.errors import WebhookUrlRefused

Resolve = Callable[[str, int], list[IpAddress]]


def resolve(host: str, port: int) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookUrlRefused(f"{host} does not resolve") from exc
    # scope ids (fe80::1%eth0) are not part of the address
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


class AddressPolicy:
    """The subscriptions API's check of a new webhook URL: its form, and where it resolves now."""

    def __init__(self, *, allow_loopback: bool = False, resolver: Resolve = resolve) -> None:
        self._allow_loopback = allow_loopback
        self._resolve = resolver

    def check(self, url: str) -> None:
        host, port = check_url(url, allow_loopback=self._allow_loopback)
        pick_address(host, self._resolve(host, port), allow_loopback=self._allow_loopback)
