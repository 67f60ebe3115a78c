import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ragline.local.idp import InvalidScope, LocalIdentityProvider
from ragline.scopes import PeopleScopes, load_people_scopes
from ragline.topology import SCOPES

scopes = st.frozensets(st.sampled_from(SCOPES))
group_names = st.sampled_from(["editors", "auditors", "ops"])


@given(
    scopes,
    st.dictionaries(group_names, scopes),
    st.frozensets(st.sampled_from(["editors", "auditors", "ops", "x"])),
)
def test_a_person_gets_the_default_and_every_one_of_their_groups_scopes(default, by_group, groups):
    people = PeopleScopes(default=tuple(default), groups={g: tuple(s) for g, s in by_group.items()})
    expected = set(default).union(*(by_group.get(g, ()) for g in groups))
    granted = people.for_groups(groups)
    assert set(granted) == expected and list(granted) == [s for s in SCOPES if s in expected]


def test_the_repositorys_cdk_json_is_read_and_its_absence_means_every_scope(tmp_path):
    assert load_people_scopes(tmp_path / "missing.json") == PeopleScopes(default=SCOPES)
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps({"context": {"api": {"peopleScopes": {"default": ["search"]}}}}))
    assert load_people_scopes(cdk_json) == PeopleScopes(default=("search",))
    cdk_json.write_text(json.dumps({"context": {"api": {"peopleScopes": {"default": ["delete"]}}}}))
    with pytest.raises(ValidationError):
        load_people_scopes(cdk_json)
    load_people_scopes()  # the committed cdk.json is valid


def test_the_local_identity_provider_gives_people_the_scopes_of_their_groups(tmp_path):
    people = PeopleScopes(default=("documents:read", "search"), groups={"editors": ("documents:write",)})
    idp = LocalIdentityProvider(tmp_path, people_scopes=people)
    reader = idp.verify(idp.issue("rita", ["staff"]))
    assert reader["scope"].split() == ["ragline/documents:read", "ragline/search"]
    editor = idp.verify(idp.issue("ed", ["staff", "editors"]))
    assert "ragline/documents:write" in editor["scope"].split()
    # Narrowing works within what the groups give, and asking for more is refused.
    assert (
        idp.verify(idp.issue("ed", ["editors"], scopes=["documents:write"]))["scope"]
        == "ragline/documents:write"
    )
    with pytest.raises(InvalidScope, match="rita's groups"):
        idp.issue("rita", ["staff"], scopes=["documents:write"])
