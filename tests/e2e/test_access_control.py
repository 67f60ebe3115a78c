"""Access control, as a property, through the HTTP API of the real local platform.

Hypothesis generates worlds of tenants, groups, users and documents. Every document carries a
secret word found nowhere else. Each user then searches (every mode) and asks for an answer, and
the property is checked against every document uploaded so far in the session, not only this
example's: no hit, citation or answer text may come from a document the user may not see, and
(completeness, so an over-eager filter cannot pass) a keyword search for a visible document's
secret finds it. Visibility is the rule the product promises: the user is in the document's tenant
(or both have none) and shares at least one of its groups.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

GROUPS = ("acl-red", "acl-green", "acl-blue", "acl-gold")
TENANTS = (None, "acme", "globex")
QUERY = "quarterly falcon review codename"


@dataclass(frozen=True)
class Doc:
    id: str
    secret: str
    tenant: str | None
    groups: frozenset[str]


@dataclass(frozen=True)
class User:
    name: str
    tenant: str | None
    groups: frozenset[str]

    def sees(self, doc: Doc) -> bool:
        return doc.tenant == self.tenant and not self.groups.isdisjoint(doc.groups)


# Every document uploaded by any example of this module: leaks across examples count too.
UPLOADED: dict[str, Doc] = {}

group_sets = st.frozensets(st.sampled_from(GROUPS), min_size=1, max_size=3)
documents = st.lists(st.tuples(st.sampled_from(TENANTS), group_sets), min_size=1, max_size=4)
users = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.frozensets(st.sampled_from(GROUPS), max_size=3)),
    min_size=1,
    max_size=3,
)


def auth(platform, user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.token(user.name, sorted(user.groups), tenant=user.tenant)}"}


def upload(platform, http: httpx.Client, tenant: str | None, groups: frozenset[str]) -> Doc:
    secret = "zq" + uuid.uuid4().hex[:12]
    uploader = User(f"uploader-{tenant}", tenant, groups)
    text = (
        f"# Falcon review\n\nThe quarterly falcon review codename is {secret}. "
        "The review covers budgets, hiring and the roadmap for the next quarter."
    )
    response = http.post(
        "/v1/documents",
        json={"title": f"Falcon review {secret}", "text": text, "allowed_groups": sorted(groups)},
        headers=auth(platform, uploader),
    )
    assert response.status_code == 202, response.text
    doc = Doc(response.json()["document_id"], secret, tenant, groups)
    deadline = time.monotonic() + 180
    while (
        status := http.get(f"/v1/documents/{doc.id}", headers=auth(platform, uploader)).json()["status"]
    ) not in (
        "indexed",
        "failed",
    ):
        assert time.monotonic() < deadline, f"{doc.id} still {status}"
        time.sleep(0.2)
    assert status == "indexed"
    UPLOADED[doc.id] = doc
    return doc


def search(platform, http: httpx.Client, user: User, query: str, mode: str) -> list[str]:
    response = http.post(
        "/v1/search", json={"query": query, "mode": mode, "top_k": 50}, headers=auth(platform, user)
    )
    assert response.status_code == 200, response.text
    return [hit["document_id"] for hit in response.json()["hits"]]


def check_user(platform, http: httpx.Client, user: User, fresh: list[Doc]) -> None:
    visible = {doc.id for doc in UPLOADED.values() if user.sees(doc)}
    for mode in ("keyword", "vector", "hybrid"):
        leaked = [d for d in search(platform, http, user, QUERY, mode) if d in UPLOADED and d not in visible]
        assert not leaked, f"{user} got {[UPLOADED[d] for d in leaked]} in {mode} search"
    for doc in fresh:
        found = search(platform, http, user, doc.secret, "keyword")
        assert all(d in visible for d in found if d in UPLOADED), f"{user} got a hidden document for {doc}"
        assert (doc.id in found) == user.sees(doc), f"{user} searching for {doc}: {found}"

    response = http.post(
        "/v1/answers",
        json={"question": f"What is the {QUERY}?", "top_k": 5, "max_tokens": 24},
        headers=auth(platform, user) | {"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    cited = {citation["document_id"] for citation in answer["citations"]}
    assert not {d for d in cited if d in UPLOADED} - visible, f"{user} was cited {cited - visible}"
    hidden_secrets = [doc.secret for doc in UPLOADED.values() if not user.sees(doc)]
    assert not [s for s in hidden_secrets if s in answer["answer"]], (
        f"{user}'s answer quotes a hidden document"
    )


@settings(
    max_examples=int(os.environ.get("RAGLINE_ACL_EXAMPLES", "8")),
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(documents=documents, users=users)
def test_no_user_ever_receives_what_they_may_not_see(platform, http, documents, users):
    fresh = [upload(platform, http, tenant, groups) for tenant, groups in documents]
    for n, (tenant, groups) in enumerate(users):
        check_user(
            platform, http, User(f"user-{n}-{tenant}-{'-'.join(sorted(groups))}", tenant, groups), fresh
        )
