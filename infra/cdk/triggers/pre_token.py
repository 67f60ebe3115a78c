"""Cognito pre token generation (trigger event version V2_0): what API Gateway needs in the *access* token.

API Gateway's Cognito authorizer checks a method's OAuth scopes against the access token, and a user
signing in with SRP gets no custom scopes there; nor does the access token carry custom attributes.
This trigger adds the platform's scopes (RAGLINE_SCOPES, from ragline.topology, comma separated) and
the tenant attribute (ragline.identity.TENANT_CLAIM) to people's access tokens. Groups
(`cognito:groups`) are in access tokens already. Machine clients (client credentials) never reach
this trigger version: their scopes are the app client's allowed scopes.

Self-contained (no ragline imports): it is deployed as its own small asset.
"""

from __future__ import annotations

import os
from typing import Any

TENANT_CLAIM = "custom:tenant"


def handler(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    scopes = [s for s in os.environ.get("RAGLINE_SCOPES", "").split(",") if s]
    tenant = (event.get("request", {}).get("userAttributes") or {}).get(TENANT_CLAIM)
    access: dict[str, Any] = {"scopesToAdd": scopes}
    if tenant:
        access["claimsToAddOrOverride"] = {TENANT_CLAIM: tenant}
    event.setdefault("response", {})["claimsAndScopeOverrideDetails"] = {"accessTokenGeneration": access}
    return event
