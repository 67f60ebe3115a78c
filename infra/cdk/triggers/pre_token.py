"""Cognito pre token generation (trigger event version V3_0): what API Gateway and the functions need
in *access* tokens, for people and for machines.

People (sign-in, refresh): API Gateway's Cognito authorizer checks a method's OAuth scopes against
the access token, and a user signing in with SRP gets no custom scopes there, nor custom attributes.
So the scopes `api.peopleScopes` gives the person's groups (RAGLINE_PEOPLE_SCOPES, JSON
`{"default": [...], "groups": {group: [...]}}` of OAuth scope names, from ragline.scopes) and the
tenant attribute go in. Groups (`cognito:groups`) are there already.

Machines (client credentials; only V3_0 reaches them): their scopes are their app client's allowed
scopes and stay as they are. Cognito gives them no groups, so their groups and tenant come from the
client mapping the CDK app writes to the SSM parameter named by RAGLINE_MACHINE_CLIENTS_PARAMETER
(`{client id: {"name", "groups", "tenant"}}`) and go into `ragline:groups` (space separated) and
`custom:tenant` (ragline.identity reads them). A parameter rather than an environment variable: the
pool needs this function and the clients need the pool, so the function cannot name the clients' ids
without a dependency cycle.

Self-contained (no ragline imports): it is deployed as its own small asset.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

TENANT_CLAIM = "custom:tenant"
MACHINE_GROUPS_CLAIM = "ragline:groups"
MACHINE_TRIGGER = "TokenGeneration_ClientCredentials"
# New clients come with a deploy, and a client the cached mapping lacks forces a fresh read (at most
# once per REREAD_S), so a long cache costs nothing but a few minutes on a changed group list.
CACHE_S = 300.0
REREAD_S = 30.0

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


class MachineClients:
    """The client-id → groups-and-tenant mapping, read from SSM and cached for the warm container."""

    def __init__(self, ssm: Any, parameter: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ssm = ssm
        self._parameter = parameter
        self._clock = clock
        self._mapping: dict[str, Mapping[str, Any]] = {}
        self._read_at: float | None = None

    def lookup(self, client_id: str) -> Mapping[str, Any] | None:
        age = None if self._read_at is None else self._clock() - self._read_at
        if age is None or age > CACHE_S or (client_id not in self._mapping and age > REREAD_S):
            # A failed read fails the token request (Cognito answers the client with an error) rather
            # than issuing a token without the groups the client is configured with.
            value = self._ssm.get_parameter(Name=self._parameter)["Parameter"]["Value"]
            self._mapping, self._read_at = json.loads(value), self._clock()
        return self._mapping.get(client_id)


_machine_clients: MachineClients | None = None


def _default_machine_clients() -> MachineClients:
    global _machine_clients
    if _machine_clients is None:
        import boto3
        from botocore.config import Config

        # Cognito waits 5 seconds for the whole trigger: two attempts of at most 1 s to connect and 1 s
        # to read (4 s, plus a sub-second backoff) fit in it; 2 s reads (6 s) would not.
        config = Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 2, "mode": "standard"})
        _machine_clients = MachineClients(
            boto3.client("ssm", config=config), os.environ["RAGLINE_MACHINE_CLIENTS_PARAMETER"]
        )
    return _machine_clients


def _person(event: Mapping[str, Any]) -> dict[str, Any]:
    people = json.loads(os.environ["RAGLINE_PEOPLE_SCOPES"])
    request = event.get("request") or {}
    groups = (request.get("groupConfiguration") or {}).get("groupsToOverride") or []
    scopes = set(people["default"]).union(*(people["groups"].get(group, ()) for group in groups))
    tenant = (request.get("userAttributes") or {}).get(TENANT_CLAIM)
    access: dict[str, Any] = {"scopesToAdd": sorted(scopes)}
    if tenant:
        access["claimsToAddOrOverride"] = {TENANT_CLAIM: tenant}
    return access


def _machine(event: Mapping[str, Any], clients: MachineClients) -> dict[str, Any]:
    client_id = (event.get("callerContext") or {}).get("clientId", "")
    client = clients.lookup(client_id)
    if client is None:
        # A client made outside the CDK app (aws cognito-idp create-user-pool-client): its token keeps
        # its scopes and carries no groups, so it sees no document.
        logger.warning("machine client %s is not in the mapping: no groups or tenant", client_id)
        return {}
    claims: dict[str, Any] = {}
    if client.get("groups"):
        claims[MACHINE_GROUPS_CLAIM] = " ".join(client["groups"])
    if client.get("tenant"):
        claims[TENANT_CLAIM] = client["tenant"]
    return {"claimsToAddOrOverride": claims} if claims else {}


def handler(
    event: dict[str, Any], _context: Any = None, *, machine_clients: MachineClients | None = None
) -> dict[str, Any]:
    if event.get("triggerSource") == MACHINE_TRIGGER:
        access = _machine(event, machine_clients or _default_machine_clients())
    else:
        access = _person(event)
    event.setdefault("response", {})["claimsAndScopeOverrideDetails"] = {"accessTokenGeneration": access}
    return event
