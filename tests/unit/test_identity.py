import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragline.contracts import Principal
from ragline.identity import can_see, principal_from_claims


@pytest.mark.parametrize(
    "raw",
    [["engineering", "ops"], "engineering,ops", "[engineering ops]", "[engineering, ops]"],
)
def test_groups_claim_in_every_shape_an_authorizer_sends(raw):
    principal = principal_from_claims({"sub": "alice", "cognito:groups": raw})
    assert principal.groups == {"engineering", "ops"}


def test_missing_groups_and_tenant():
    principal = principal_from_claims({"sub": "bob"})
    assert principal.groups == frozenset() and principal.tenant is None


def test_a_machine_token_takes_its_groups_from_the_machine_claim_and_a_person_never_does():
    machine = {
        "sub": "client1",
        "client_id": "client1",
        "ragline:groups": "reports ops",
        "custom:tenant": "acme",
    }
    principal = principal_from_claims(machine)
    assert principal.groups == {"reports", "ops"} and principal.tenant == "acme"
    # A machine token's cognito:groups (Cognito gives machines none) is not read either.
    assert principal_from_claims({**machine, "cognito:groups": "admin"}).groups == {"reports", "ops"}
    person = {"sub": "alice", "client_id": "app", "cognito:groups": "eng", "ragline:groups": "admin"}
    assert principal_from_claims(person).groups == {"eng"}


def test_tenant_claim():
    assert principal_from_claims({"sub": "a", "custom:tenant": "acme"}).tenant == "acme"


groups = st.frozensets(st.sampled_from(["a", "b", "c", "d"]), max_size=4)
tenants = st.sampled_from([None, "t1", "t2"])


@given(groups, tenants, groups, tenants)
def test_visible_exactly_when_a_group_is_shared_within_the_tenant(user_groups, user_tenant, allowed, tenant):
    principal = Principal(user_id="u", groups=user_groups, tenant=user_tenant)
    assert can_see(principal, allowed, tenant) == (bool(user_groups & allowed) and user_tenant == tenant)
