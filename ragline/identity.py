"""Who the caller is and what they may see. Visibility is decided here and nowhere else.

In AWS the Cognito authorizer verifies the token and API Gateway hands the claims to the function;
locally the gateway verifies the token the same way and hands over the same claims."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ragline.contracts import Principal
from ragline.topology import RESOURCE_SERVER

GROUPS_CLAIM = "cognito:groups"
# A machine client's groups: Cognito puts `cognito:groups` only into people's tokens, so the pre-token
# trigger (infra/cdk/triggers/pre_token.py) gives a client-credentials token this claim instead,
# space-separated like `scope` (group names hold no whitespace). Read for machine tokens only.
MACHINE_GROUPS_CLAIM = "ragline:groups"
TENANT_CLAIM = "custom:tenant"
# OAuth scopes, space-separated as Cognito access tokens carry them: "ragline/search ragline/answers".
SCOPE_CLAIM = "scope"
# The app client a token was issued to (a machine client's token has it as its `sub` too).
CLIENT_ID_CLAIM = "client_id"


def _groups(raw: Any) -> frozenset[str]:
    # REST API authorizers pass claims as strings: "a,b" or "[a b]"; JWT libraries give lists.
    if raw is None:
        return frozenset()
    if isinstance(raw, str):
        raw = raw.strip().strip("[]").replace(",", " ").split()
    return frozenset(str(g).strip() for g in raw if str(g).strip())


def scopes_from_claims(claims: Mapping[str, Any]) -> frozenset[str]:
    """The platform's scopes a token grants (topology.SCOPES names); other resource servers' are ignored."""
    raw = claims.get(SCOPE_CLAIM) or ""
    names = raw.split() if isinstance(raw, str) else [str(s) for s in raw]
    prefix = f"{RESOURCE_SERVER}/"
    return frozenset(name.removeprefix(prefix) for name in names if name.startswith(prefix))


def is_machine(claims: Mapping[str, Any]) -> bool:
    """A client-credentials token: Cognito issues it with the app client's id as its subject."""
    return claims.get(CLIENT_ID_CLAIM) is not None and claims.get(CLIENT_ID_CLAIM) == claims.get("sub")


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    # Each kind of token is read from its own claim, so neither can borrow the other's.
    groups_claim = MACHINE_GROUPS_CLAIM if is_machine(claims) else GROUPS_CLAIM
    return Principal(
        user_id=str(claims["sub"]),
        groups=_groups(claims.get(groups_claim)),
        tenant=claims.get(TENANT_CLAIM) or None,
    )


def can_see(principal: Principal, allowed_groups: Iterable[str], tenant: str | None) -> bool:
    """A chunk is visible iff the caller shares a group with it and is in its tenant (if any)."""
    if tenant != principal.tenant:
        return False
    return not principal.groups.isdisjoint(allowed_groups)
