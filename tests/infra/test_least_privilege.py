"""The boundaries between contexts, read from the synthesized IAM: every policy of every role in the
app (functions, state machines, models, CDK's helpers), so a grant added anywhere is seen.

- retrieve cannot write the search index or any table;
- the context functions cannot read the raw document bucket (nor any bucket);
- only index functions can write the search index (PUT/DELETE/PATCH, or POST beyond `_search`);
- only ingest functions write the documents table; the sagas reach it only through ingest-saga.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from infra.cdk.nag import flatten
from ragline.topology import TOPOLOGY

TABLE_WRITES = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
    "dynamodb:*",
)
INDEX_WRITES = ("es:ESHttpPut", "es:ESHttpDelete", "es:ESHttpPatch", "es:*")
MAPPINGS = "/_plugins/_security/api/rolesmapping/*"


@dataclass
class Role:
    stack: str
    logical_id: str
    function: str | None = None  # the topology function it runs, if any
    statements: list[dict] = field(default_factory=list)

    @property
    def context(self) -> str | None:
        return TOPOLOGY.function(self.function).context if self.function else None

    def allows(self) -> list[tuple[str, list[str], dict]]:
        """(action, resources as cdk-nag spells them, statement) for every Allow."""
        found = []
        for statement in self.statements:
            if statement.get("Effect") != "Allow":
                continue
            actions = statement.get("Action", [])
            resources = statement.get("Resource", [])
            resources = [flatten(r) for r in (resources if isinstance(resources, list) else [resources])]
            for action in [actions] if isinstance(actions, str) else actions:
                found.append((action, resources, statement))
        return found


def _roles(synth) -> dict[tuple[str, str], Role]:
    roles = {
        (stack, logical_id): Role(stack, logical_id)
        for stack, template in synth.templates.items()
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::IAM::Role"
    }
    for stack, template in synth.templates.items():
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] == "AWS::IAM::Role":
                for policy in resource["Properties"].get("Policies", []):
                    roles[(stack, logical_id)].statements += policy["PolicyDocument"]["Statement"]
            if resource["Type"] != "AWS::IAM::Policy":
                continue
            for ref in resource["Properties"].get("Roles", []):
                if "Ref" in ref:
                    key = (stack, ref["Ref"])
                else:  # imported from the role's stack: the export's name carries its logical id
                    (key,) = [k for k in roles if k[1] in json.dumps(ref)]
                roles[key].statements += resource["Properties"]["PolicyDocument"]["Statement"]
    for stack in synth.stacks.values():
        for name, fn in getattr(stack, "functions", {}).items():
            role_stack = fn.role.node.path.split("/")[0]
            roles[(role_stack, synth.logical_id(fn.role))].function = name
    return roles


@pytest.fixture(scope="module")
def roles(synth) -> dict[tuple[str, str], Role]:
    found = _roles(synth)
    assert {r.function for r in found.values() if r.function} == {f.name for f in TOPOLOGY.functions}
    return found


def _refers_to(resources: list[str], logical_id: str) -> bool:
    return any(logical_id in r for r in resources)


def test_retrieve_cannot_write_the_index_or_any_table(synth, roles):
    retrieve = [r for r in roles.values() if r.context == "retrieve"]
    assert retrieve
    for role in retrieve:
        allows = role.allows()
        assert not [a for a, _, _ in allows if a.startswith(TABLE_WRITES) or a.startswith("dynamodb:")], role
        assert not [a for a, _, _ in allows if a.startswith(INDEX_WRITES)], role
        searches = [(a, r) for a, r, _ in allows if a.startswith("es:")]
        assert searches, role.function
        # POST also writes (_bulk, _update_by_query): readers reach `_search` paths only.
        assert all(res.endswith("/_search") for _, resources in searches for res in resources), searches
        assert not [
            a for a, _, _ in allows if a.startswith(("s3:Put", "s3:Delete", "sqs:Send", "events:Put"))
        ]


def test_only_index_functions_can_write_the_search_index(synth, roles):
    writers = set()
    admin = synth.logical_id(synth.stacks["Index"].search_admin)
    for role in roles.values():
        for action, resources, _ in role.allows():
            if role.logical_id == admin:  # the master user: role mappings, nothing else in the domain
                if action.startswith("es:"):
                    assert all(r.endswith(MAPPINGS) for r in resources), (action, resources)
                continue
            beyond_search = action == "es:ESHttpPost" and not all(r.endswith("/_search") for r in resources)
            if action.startswith(INDEX_WRITES) or beyond_search:
                writers.add(role.function or role.logical_id)
    index_functions = {f.name for f in TOPOLOGY.functions if f.context == "index"}
    assert writers and writers <= index_functions, writers - index_functions

    # The domain's own resource policy says the same to OpenSearch.
    ((_, domain),) = synth.resources("AWS::OpenSearchService::Domain").items()
    by_role = {(r.stack, r.logical_id): r for r in roles.values()}
    for statement in domain["Properties"]["AccessPolicies"]["Statement"]:
        role = by_role[("Index", statement["Principal"]["AWS"]["Fn::GetAtt"][0])]
        if role.logical_id == admin:
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        resources = [flatten(r) for r in resources]
        if role.context != "index":
            assert not [a for a in actions if a.startswith(INDEX_WRITES)], role.function
            assert all(r.endswith("/_search") for r in resources), role.function


def test_context_functions_cannot_read_the_raw_bucket_or_any_bucket(synth, roles):
    raw = synth.logical_id(synth.stacks["Ingest"].buckets["raw"])
    context = [r for r in roles.values() if r.context == "context"]
    assert context
    for role in context:
        for action, resources, _ in role.allows():
            assert not _refers_to(resources, raw), (role.function, action)
            assert not action.startswith("s3:"), (role.function, action)
    # Nor does the bucket's own policy let anyone in: it only denies (plain HTTP).
    policies = synth.resources("AWS::S3::BucketPolicy", "Ingest").values()
    raw_policies = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": raw}]
    assert raw_policies
    for policy in raw_policies:
        assert {s["Effect"] for s in policy["Properties"]["PolicyDocument"]["Statement"]} == {"Deny"}


def test_only_ingest_can_write_the_documents_table_and_the_sagas_only_through_ingest_saga(synth, roles):
    documents = synth.logical_id(synth.stacks["Ingest"].tables["documents"])
    writers = {
        role.function or role.logical_id
        for role in roles.values()
        for action, resources, _ in role.allows()
        if action.startswith(TABLE_WRITES) and _refers_to(resources, documents)
    }
    ingest = {f.name for f in TOPOLOGY.functions if f.context == "ingest"}
    assert "ingest-saga" in writers and writers <= ingest, writers - ingest

    saga = synth.stacks["Saga"]
    for machine in saga.state_machines.values():
        role = roles[("Saga", synth.logical_id(machine.role))]
        data = [a for a, _, _ in role.allows() if a.startswith(("dynamodb:", "s3:", "es:"))]
        assert data == [], data
        assert "lambda:InvokeFunction" in {a for a, _, _ in role.allows()}


def test_fine_grained_access_control_maps_index_roles_to_all_access_and_retrieve_to_readall(synth, roles):
    ((_, domain),) = synth.resources("AWS::OpenSearchService::Domain").items()
    security = domain["Properties"]["AdvancedSecurityOptions"]
    index = synth.stacks["Index"]
    admin = synth.logical_id(index.search_admin)
    assert security["Enabled"] is True and security["InternalUserDatabaseEnabled"] is False
    assert security["MasterUserOptions"]["MasterUserARN"] == {"Fn::GetAtt": [admin, "Arn"]}
    assert roles[("Index", admin)].function is None  # no function runs as the master user

    (mapping,) = synth.resources("AWS::CloudFormation::CustomResource", "Index").values()
    mapped = {
        opensearch_role: {arn["Fn::GetAtt"][0] for arn in arns}
        for opensearch_role, arns in mapping["Properties"]["Mappings"].items()
    }
    by_context = {}
    for name, role in index.search_roles.items():
        by_context.setdefault(TOPOLOGY.function(name).context, set()).add(synth.logical_id(role))
    assert mapped == {"all_access": by_context["index"], "readall": by_context["retrieve"]}


def test_role_mappings_are_merged_into_what_opensearch_already_has():
    from infra.cdk.custom.search_roles import merged

    current = {"backend_roles": ["arn:master"], "users": ["admin"], "hosts": []}
    assert merged(current, ["arn:a", "arn:master"]) == {
        "backend_roles": ["arn:master", "arn:a"],
        "users": ["admin"],
        "hosts": [],
    }
    assert merged(None, ["arn:a"]) == {"backend_roles": ["arn:a"], "users": [], "hosts": []}
