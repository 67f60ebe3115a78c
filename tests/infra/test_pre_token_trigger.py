"""The pre-token trigger (infra/cdk/triggers/pre_token.py) on Cognito's V3_0 events: people get the
platform's scopes and their tenant; machines keep their client's scopes and get the groups and tenant
the CDK app maps their client id to, read from SSM (moto here). Its claims are then read back through
ragline.identity, as the functions read what API Gateway hands them."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from infra.cdk.triggers import pre_token
from ragline import identity
from ragline.scopes import PeopleScopes
from ragline.topology import RESOURCE_SERVER, SCOPES, oauth_scope

PARAMETER = "/ragline/test/machine-clients"
REPORTER = {"name": "reporter", "groups": ["eng", "ops"], "tenant": "acme"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        client = boto3.client("ssm", region_name="eu-west-1")
        client.put_parameter(Name=PARAMETER, Type="String", Value=json.dumps({"client1": REPORTER}))
        yield client


def person_event(attributes: dict[str, str], groups: list[str] | None = None) -> dict:
    return {
        "version": "3",
        "triggerSource": "TokenGeneration_Authentication",
        "callerContext": {"clientId": "people-app"},
        "request": {
            "userAttributes": attributes,
            "groupConfiguration": {"groupsToOverride": groups or [], "iamRolesToOverride": []},
            "scopes": ["aws.cognito.signin.user.admin"],
        },
        "response": {},
    }


def machine_event(client_id: str) -> dict:
    return {
        "version": "3",
        "triggerSource": pre_token.MACHINE_TRIGGER,
        "callerContext": {"clientId": client_id},
        "request": {"userAttributes": {}, "scopes": [oauth_scope("search")]},
        "response": {},
    }


def access_of(event: dict) -> dict:
    return event["response"]["claimsAndScopeOverrideDetails"]["accessTokenGeneration"]


def test_the_trigger_writes_the_claims_ragline_identity_reads():
    assert pre_token.TENANT_CLAIM == identity.TENANT_CLAIM
    assert pre_token.MACHINE_GROUPS_CLAIM == identity.MACHINE_GROUPS_CLAIM


def people_scopes_env(monkeypatch: pytest.MonkeyPatch, people: PeopleScopes) -> None:
    """RAGLINE_PEOPLE_SCOPES as the CDK app sets it (tests/infra/test_api_security.py checks that)."""
    monkeypatch.setenv("RAGLINE_PEOPLE_SCOPES", json.dumps(people.oauth()))


def test_people_get_the_default_scopes_and_their_tenant(monkeypatch: pytest.MonkeyPatch):
    people_scopes_env(monkeypatch, PeopleScopes())
    access = access_of(pre_token.handler(person_event({"sub": "u1", "custom:tenant": "acme"})))
    assert sorted(access["scopesToAdd"]) == sorted(f"{RESOURCE_SERVER}/{s}" for s in SCOPES)
    assert access["claimsToAddOrOverride"] == {"custom:tenant": "acme"}
    assert "claimsToAddOrOverride" not in access_of(pre_token.handler(person_event({"sub": "u2"})))


@pytest.mark.parametrize("groups", [[], ["editors"], ["auditors"], ["editors", "auditors", "other"]])
def test_a_persons_groups_add_their_scopes_as_ragline_scopes_says(monkeypatch, groups):
    people = PeopleScopes(
        default=("documents:read", "search"),
        groups={"editors": ("documents:write",), "auditors": ("answers", "search")},
    )
    people_scopes_env(monkeypatch, people)
    access = access_of(pre_token.handler(person_event({"sub": "u1"}, groups)))
    assert sorted(access["scopesToAdd"]) == sorted(oauth_scope(s) for s in people.for_groups(groups))


def test_a_machine_keeps_its_clients_scopes_and_gets_its_groups_and_tenant(ssm, monkeypatch):
    people_scopes_env(monkeypatch, PeopleScopes())
    clients = pre_token.MachineClients(ssm, PARAMETER)
    access = access_of(pre_token.handler(machine_event("client1"), machine_clients=clients))
    # No scopesToAdd: the people's "every scope" must never widen a machine client's grant.
    assert access == {"claimsToAddOrOverride": {"ragline:groups": "eng ops", "custom:tenant": "acme"}}
    # What the functions make of the token Cognito would issue (API Gateway passes strings on).
    claims = {"sub": "client1", "client_id": "client1", "scope": oauth_scope("search")}
    principal = identity.principal_from_claims({**claims, **access["claimsToAddOrOverride"]})
    assert principal.groups == {"eng", "ops"} and principal.tenant == "acme"


def test_an_unknown_client_gets_no_groups_and_a_new_one_is_found_after_a_reread(ssm):
    clock = Clock()
    clients = pre_token.MachineClients(ssm, PARAMETER, clock=clock)
    assert access_of(pre_token.handler(machine_event("client2"), machine_clients=clients)) == {}
    mapping = {"client1": REPORTER, "client2": {"name": "bare", "groups": [], "tenant": None}}
    ssm.put_parameter(Name=PARAMETER, Type="String", Value=json.dumps(mapping), Overwrite=True)
    clock.now += pre_token.REREAD_S / 2
    assert clients.lookup("client2") is None  # too soon to read again for an unknown client
    clock.now += pre_token.REREAD_S
    assert clients.lookup("client2") == mapping["client2"]
    # A client without groups or tenant: a token with its scopes only.
    assert access_of(pre_token.handler(machine_event("client2"), machine_clients=clients)) == {}


def test_a_known_client_is_served_from_the_cache_until_it_expires(ssm):
    clock = Clock()
    clients = pre_token.MachineClients(ssm, PARAMETER, clock=clock)
    assert clients.lookup("client1") == REPORTER
    changed = {"client1": {**REPORTER, "groups": ["finance"]}}
    ssm.put_parameter(Name=PARAMETER, Type="String", Value=json.dumps(changed), Overwrite=True)
    clock.now += pre_token.CACHE_S - 1
    assert clients.lookup("client1") == REPORTER
    clock.now += 2
    assert clients.lookup("client1")["groups"] == ["finance"]


def test_a_mapping_that_cannot_be_read_fails_the_token_request(ssm):
    ssm.delete_parameter(Name=PARAMETER)
    clients = pre_token.MachineClients(ssm, PARAMETER)
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        pre_token.handler(machine_event("client1"), machine_clients=clients)
