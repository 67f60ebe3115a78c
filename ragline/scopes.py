"""Which of the platform's OAuth scopes (topology.SCOPES) a *person's* access token carries.

Declared once in cdk.json (`api.peopleScopes`): `default`, the scopes every person gets, and `groups`,
more scopes for the members of a group. For example, everyone may read and ask while only `editors`
write: `{"default": ["documents:read", "search", "answers"], "groups": {"editors": ["documents:write"]}}`.
The deployed pool's pre-token trigger applies it (infra/cdk/triggers/pre_token.py) and the local
identity provider applies the same to `ragline token`. Machines get their app client's scopes instead
(`api.machineClients`). A scope lets a caller reach a route; what it sees there is still decided by
its groups and tenant (ragline.identity).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ragline.cdkjson import CDK_JSON, cdk_context
from ragline.contracts import GroupName
from ragline.topology import SCOPES, oauth_scope

Scope = Literal[SCOPES]  # type: ignore[valid-type]


class PeopleScopes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: tuple[Scope, ...] = SCOPES
    groups: dict[GroupName, tuple[Scope, ...]] = {}

    def oauth(self) -> dict[str, object]:
        """This policy with OAuth scope names, as the pre-token trigger reads it (RAGLINE_PEOPLE_SCOPES)."""
        return {
            "default": [oauth_scope(s) for s in self.default],
            "groups": {group: [oauth_scope(s) for s in scopes] for group, scopes in self.groups.items()},
        }

    def for_groups(self, groups: Iterable[str]) -> tuple[str, ...]:
        """The scopes of a person in `groups`, in SCOPES order."""
        granted = set(self.default).union(*(self.groups.get(group, ()) for group in groups))
        return tuple(scope for scope in SCOPES if scope in granted)


def load_people_scopes(cdk_json: Path = CDK_JSON) -> PeopleScopes:
    """What the repository's cdk.json declares (every scope for everyone where it declares nothing)."""
    return PeopleScopes.model_validate((cdk_context(cdk_json).get("api") or {}).get("peopleScopes") or {})
