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


def test_tenant_claim():
    assert principal_from_claims({"sub": "a", "custom:tenant": "acme"}).tenant == "acme"


groups = st.frozensets(st.sampled_from(["a", "b", "c", "d"]), max_size=4)
tenants = st.sampled_from([None, "t1", "t2"])


@given(groups, tenants, groups, tenants)
def test_visible_exactly_when_a_group_is_shared_within_the_tenant(user_groups, user_tenant, allowed, tenant):
    principal = Principal(user_id="u", groups=user_groups, tenant=user_tenant)
    assert can_see(principal, allowed, tenant) == (bool(user_groups & allowed) and user_tenant == tenant)
