"""Where webhooks may go (SSRF): only to public unicast addresses, checked on the addresses a host
resolves to, because a public name can point anywhere. The HTTP adapter connects to the address it
checked, so a second DNS answer (rebinding) cannot switch it afterwards."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import WebhookUrlRefused

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services outside the ranges below (AWS's IPv6 one is in fd00::/8, already private).
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


def refusal(address: IpAddress, *, allow_loopback: bool = False) -> str | None:
    """Why webhooks may not go to `address`, or None when they may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped, allow_loopback=allow_loopback)
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    if address in METADATA:
        return "cloud metadata"
    checks = (
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
        ("not global", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def check_url(url: str, *, allow_loopback: bool = False) -> tuple[str, int]:
    """The URL's host and port, if its form may receive webhooks: HTTPS (plain HTTP only with
    `allow_loopback`, for test receivers), no credentials, and no refused IP literal as host."""
    parts = urlsplit(url)
    allowed = {"https", "http"} if allow_loopback else {"https"}
    if parts.scheme not in allowed:
        raise WebhookUrlRefused("webhook URLs must use https")
    if parts.username or parts.password:
        raise WebhookUrlRefused("webhook URLs may not carry credentials")
    if not parts.hostname:
        raise WebhookUrlRefused("the webhook URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookUrlRefused("the webhook URL's port is not a number") from exc
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return parts.hostname, port
    if reason := refusal(literal, allow_loopback=allow_loopback):
        raise WebhookUrlRefused(f"webhooks may not go to {reason} addresses")
    return parts.hostname, port


def pick_address(host: str, addresses: list[IpAddress], *, allow_loopback: bool = False) -> IpAddress:
    """The address to connect to: every address the name resolves to must be allowed (a name that
    mixes public and private answers is refused whole)."""
    if not addresses:
        raise WebhookUrlRefused(f"{host} does not resolve")
    for address in addresses:
        if reason := refusal(address, allow_loopback=allow_loopback):
            raise WebhookUrlRefused(f"{host} resolves to a {reason} address ({address})")
    # IPv4 first: a Lambda function outside a VPC has no IPv6 route out.
    return next((a for a in addresses if a.version == 4), addresses[0])
