"""Who the caller is and what they may see. Visibility is decided here and nowhere else.

In AWS the Cognito authorizer verifies the token and API Gateway hands the claims to the function;
locally the gateway verifies the token the same way and hands over the same claims."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ragline.contracts import Principal

GROUPS_CLAIM = "cognito:groups"
TENANT_CLAIM = "custom:tenant"


def _groups(raw: Any) -> frozenset[str]:
    # REST API authorizers pass claims as strings: "a,b" or "[a b]"; JWT libraries give lists.
    if raw is None:
        return frozenset()
    if isinstance(raw, str):
        raw = raw.strip().strip("[]").replace(",", " ").split()
    return frozenset(str(g).strip() for g in raw if str(g).strip())


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    return Principal(
        user_id=str(claims["sub"]),
        groups=_groups(claims.get(GROUPS_CLAIM)),
        tenant=claims.get(TENANT_CLAIM) or None,
    )


def can_see(principal: Principal, allowed_groups: Iterable[str], tenant: str | None) -> bool:
    """A chunk is visible iff the caller shares a group with it and is in its tenant (if any)."""
    if tenant != principal.tenant:
        return False
    return not principal.groups.isdisjoint(allowed_groups)
