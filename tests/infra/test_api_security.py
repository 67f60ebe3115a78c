"""The front door: scopes, API keys and usage plans per tier, request validation against the API's
models, the WAF web ACL, and the Cognito pieces that make access tokens carry scopes and tenants."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from infra.cdk import apimodels
from infra.cdk.config import DeployConfig
from ragline.tiers import tiers_from_context
from ragline.topology import RESOURCE_SERVER, SCOPES, TOPOLOGY, oauth_scope

CDK_JSON = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"]
ROUTES = [(route, spec) for spec in TOPOLOGY.functions for route in spec.routes]


def _resources(synth, kind: str) -> dict[str, dict]:
    return synth.resources(kind, "Api")


def _methods(synth) -> dict[tuple[str, str], dict]:
    resources = synth.templates["Api"]["Resources"]
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = "" if "Fn::GetAtt" in parent else path_of(parent["Ref"])
            paths[logical_id] = f"{prefix}/{props['PathPart']}"
        return paths[logical_id]

    return {
        (m["Properties"]["HttpMethod"], path_of(m["Properties"]["ResourceId"]["Ref"])): m["Properties"]
        for m in resources.values()
        if m["Type"] == "AWS::ApiGateway::Method"
    }


def test_every_method_needs_its_routes_scope_and_an_api_key(synth):
    methods = _methods(synth)
    assert set(methods) == {(r.method, r.path) for r, _ in ROUTES}
    for route, _ in ROUTES:
        method = methods[(route.method, route.path)]
        assert method["AuthorizationType"] == "COGNITO_USER_POOLS"
        assert method["AuthorizationScopes"] == [oauth_scope(route.scope)], route
        assert method["ApiKeyRequired"] is True, route


def test_request_bodies_are_validated_against_the_api_models(synth):
    methods = _methods(synth)
    models = {
        m["Properties"]["Name"]: m["Properties"] for m in _resources(synth, "AWS::ApiGateway::Model").values()
    }
    (validator_id, validator), *others = _resources(synth, "AWS::ApiGateway::RequestValidator").items()
    assert not others
    assert validator["Properties"]["ValidateRequestBody"] is True
    with_body = 0
    for route, _ in ROUTES:
        method = methods[(route.method, route.path)]
        schema = apimodels.request_schema(route.method, route.path)
        if schema is None:
            assert "RequestModels" not in method, route
            continue
        with_body += 1
        assert method["RequestValidatorId"] == {"Ref": validator_id}, route
        name = method["RequestModels"]["application/json"]
        assert models[name]["Schema"] == schema
        assert models[name]["ContentType"] == "application/json"
        jsonschema.Draft4Validator.check_schema(schema)
    assert with_body >= 4


def _draft4(method: str, path: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(apimodels.request_schema(method, path))


def test_the_gateway_models_accept_what_the_contracts_accept_and_refuse_what_they_refuse():
    from ragline.contracts import SearchRequest

    search = _draft4("POST", "/v1/search")
    valid = SearchRequest(query="rotate credentials").model_dump(mode="json", exclude_none=True)
    assert list(search.iter_errors(valid)) == []
    for body in ({"query": 5}, {"query": "x", "unexpected": True}, {}, {"query": "x", "top_k": "ten"}):
        assert list(search.iter_errors(body)), body
        with pytest.raises(ValidationError):
            SearchRequest.model_validate(body)


def test_draft4_conversion_inlines_references_and_rewrites_newer_keywords():
    document = {
        "paths": {
            "/x": {
                "post": {
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/X"}}}
                    }
                }
            }
        },
        "components": {
            "schemas": {
                "X": {
                    "type": "object",
                    "properties": {
                        "kind": {"const": "a"},
                        "n": {"type": "number", "exclusiveMinimum": 0},
                        "tags": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}},
                        "y": {"$ref": "#/components/schemas/Y"},
                    },
                    "examples": [{}],
                },
                "Y": {"type": "string", "maxLength": 3},
            }
        },
    }
    schema = apimodels.request_schema("POST", "/x", document)
    assert "$ref" not in json.dumps(schema) and "examples" not in schema
    props = schema["properties"]
    assert props["kind"] == {"enum": ["a"]}
    assert props["n"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert props["y"] == {"type": "string", "maxLength": 3}
    assert "propertyNames" not in props["tags"]
    validator = jsonschema.Draft4Validator(schema)
    assert list(validator.iter_errors({"n": 0}))  # exclusive
    assert not list(validator.iter_errors({"n": 1, "kind": "a", "y": "abc"}))


def test_one_usage_plan_per_tier_with_its_rate_burst_and_daily_quota_on_the_stage(synth):
    tiers = tiers_from_context(CDK_JSON.get("apiTiers"))
    plans = {
        p["Properties"]["UsagePlanName"]: p["Properties"]
        for p in _resources(synth, "AWS::ApiGateway::UsagePlan").values()
    }
    assert set(plans) == {f"ragline-{CDK_JSON['stage']}-{name}" for name in tiers}
    for name, tier in tiers.items():
        plan = plans[f"ragline-{CDK_JSON['stage']}-{name}"]
        assert plan["Throttle"] == {"RateLimit": tier.rate_per_second, "BurstLimit": tier.burst}
        assert plan["Quota"] == {"Limit": tier.daily_quota, "Period": "DAY"}
        (stage,) = plan["ApiStages"]
        assert stage["Stage"] == {"Ref": _stage_id(synth)}


def _stage_id(synth) -> str:  # noqa: N802
    (stage_id,) = _resources(synth, "AWS::ApiGateway::Stage")
    return stage_id


def test_the_stage_throttle_must_not_be_below_a_tier():
    tiers = {"big": {"ratePerSecond": 500, "burst": 100, "dailyQuota": 10}}
    with pytest.raises(ValidationError, match="exceeds the stage throttle"):
        DeployConfig.model_validate({"apiTiers": tiers})
    ok = DeployConfig.model_validate({"apiTiers": tiers, "api": {"throttleRateLimit": 500}})
    assert ok.api_tiers["big"].rate_per_second == 500


def test_waf_guards_the_stage_with_managed_rules_a_rate_limit_and_a_body_limit(synth):
    ((acl_id, acl),) = _resources(synth, "AWS::WAFv2::WebACL").items()
    props = acl["Properties"]
    assert props["Scope"] == "REGIONAL" and props["DefaultAction"] == {"Allow": {}}
    rules = {r["Name"]: r for r in props["Rules"]}
    managed = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in props["Rules"]
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert managed == {
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesAmazonIpReputationList",
    }
    rate = rules["RateLimitPerIp"]["Statement"]["RateBasedStatement"]
    assert rate["Limit"] == CDK_JSON["api"]["wafRateLimit"] and rate["AggregateKeyType"] == "IP"
    assert rules["RateLimitPerIp"]["Action"] == {"Block": {}}
    size, not_documents = rules["BodySizeLimit"]["Statement"]["AndStatement"]["Statements"]
    limit = CDK_JSON["api"]["wafBodyLimitKib"]
    assert size["SizeConstraintStatement"]["Size"] == limit * 1024
    assert size["SizeConstraintStatement"]["FieldToMatch"]["Body"]["OversizeHandling"] == "MATCH"
    assert (
        props["AssociationConfig"]["RequestBody"]["API_GATEWAY"]["DefaultSizeInspectionLimit"]
        == f"KB_{limit}"
    )
    assert not_documents["NotStatement"]["Statement"]["ByteMatchStatement"]["SearchString"] == "/v1/documents"
    # The common rule set's own 8 KB body rule would refuse inline documents: counted, not blocked.
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    assert common["RuleActionOverrides"] == [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]
    assert len({r["Priority"] for r in props["Rules"]}) == len(props["Rules"])

    (association,) = _resources(synth, "AWS::WAFv2::WebACLAssociation").values()
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    assert _stage_id(synth) in json.dumps(association["Properties"]["ResourceArn"])


def _joined(value: str | dict, refs: dict[str, str]) -> str:
    """A string CloudFormation joins from literals and Refs, with each Ref's value taken from `refs`."""
    if isinstance(value, str):
        return value
    separator, parts = value["Fn::Join"]
    return separator.join(p if isinstance(p, str) else refs[p["Ref"]] for p in parts)


def test_cognito_has_the_platform_scopes_the_configured_machine_clients_and_the_v3_trigger(synth):
    ((server_id, server),) = _resources(synth, "AWS::Cognito::UserPoolResourceServer").items()
    assert server["Properties"]["Identifier"] == RESOURCE_SERVER
    assert [s["ScopeName"] for s in server["Properties"]["Scopes"]] == list(SCOPES)
    refs = {server_id: RESOURCE_SERVER}  # a resource server's Ref is its identifier
    clients = {i: c["Properties"] for i, c in _resources(synth, "AWS::Cognito::UserPoolClient").items()}
    machines = {i: c for i, c in clients.items() if c.get("AllowedOAuthFlows") == ["client_credentials"]}
    configured = CDK_JSON["api"]["machineClients"]
    by_name = {c["ClientName"].removeprefix("ragline-dev-"): i for i, c in machines.items()}
    assert set(by_name) == set(configured)
    for name, logical_id in by_name.items():
        assert machines[logical_id]["GenerateSecret"] is True
        scopes = [_joined(s, refs) for s in machines[logical_id]["AllowedOAuthScopes"]]
        assert scopes == [oauth_scope(s) for s in configured[name]["scopes"]]
    (people,) = [c for i, c in clients.items() if i not in machines]
    assert "GenerateSecret" not in people or people["GenerateSecret"] is False
    # People sign in with SRP: no hosted-UI grant (CDK's default implicit grant to example.com).
    assert people.get("AllowedOAuthFlows", []) == [] and "CallbackURLs" not in people

    (pool,) = _resources(synth, "AWS::Cognito::UserPool").values()
    config = pool["Properties"]["LambdaConfig"]["PreTokenGenerationConfig"]
    # V3_0: the only version that runs for client-credentials grants too.
    assert config["LambdaVersion"] == "V3_0"
    assert pool["Properties"]["UserPoolTier"] == "ESSENTIALS"
    functions = _resources(synth, "AWS::Lambda::Function")
    (trigger_id,) = [i for i, f in functions.items() if f["Properties"].get("Handler") == "pre_token.handler"]
    assert config["LambdaArn"] == {"Fn::GetAtt": [trigger_id, "Arn"]}
    variables = functions[trigger_id]["Properties"]["Environment"]["Variables"]
    # The scopes people get: cdk.json's api.peopleScopes, as OAuth scope names.
    people = CDK_JSON["api"]["peopleScopes"]
    assert json.loads(variables["RAGLINE_PEOPLE_SCOPES"]) == {
        "default": [oauth_scope(s) for s in people["default"]],
        "groups": {g: [oauth_scope(s) for s in scopes] for g, scopes in people["groups"].items()},
    }

    # The mapping the trigger reads: each machine client's id → its configured groups and tenant.
    (parameter,) = _resources(synth, "AWS::SSM::Parameter").values()
    name = parameter["Properties"]["Name"]
    assert variables["RAGLINE_MACHINE_CLIENTS_PARAMETER"] == name  # a literal: no reference, no cycle
    mapping = json.loads(_joined(parameter["Properties"]["Value"], {i: i for i in machines}))
    assert {i: (m["name"], m["groups"], m.get("tenant")) for i, m in mapping.items()} == {
        i: (n, configured[n]["groups"], configured[n]["tenant"]) for n, i in by_name.items()
    }
    # The trigger may log and read that one parameter, nothing else (X-Ray aside).
    role_id = functions[trigger_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    (statements,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in _resources(synth, "AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    granted = {
        a: s["Resource"]
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert set(granted) == {
        "logs:CreateLogStream", "logs:PutLogEvents", "ssm:GetParameter", "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }  # fmt: skip
    pseudo = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "111122223333"}
    assert (
        _joined(granted["ssm:GetParameter"], pseudo) == f"arn:aws:ssm:eu-west-1:111122223333:parameter{name}"
    )


def test_an_existing_user_pool_is_used_by_id_with_the_scopes_clients_and_a_trigger_to_attach():
    from aws_cdk import App, Stack
    from aws_cdk.assertions import Template

    from infra.cdk.stacks.api import Identity

    stack = Stack(App(), "Pool")
    Identity(
        stack, "Identity", config=DeployConfig.model_validate({"api": {"userPoolId": "eu-west-1_AbC123"}})
    )
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::Cognito::UserPool", 0)
    # The trigger is made for the pool's owner to attach (README, "Auth"); Cognito may invoke it.
    template.has_resource_properties("AWS::Lambda::Function", {"Handler": "pre_token.handler"})
    (permission,) = template.find_resources("AWS::Lambda::Permission").values()
    assert permission["Properties"]["Principal"] == "cognito-idp.amazonaws.com"
    pseudo = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "111122223333"}
    source = _joined(permission["Properties"]["SourceArn"], pseudo)
    assert source == "arn:aws:cognito-idp:eu-west-1:111122223333:userpool/eu-west-1_AbC123"
    template.has_resource_properties(
        "AWS::Cognito::UserPoolResourceServer",
        {"UserPoolId": "eu-west-1_AbC123", "Identifier": RESOURCE_SERVER},
    )
    template.resource_count_is("AWS::Cognito::UserPoolClient", 1 + len(DeployConfig().api.machine_clients))
    with pytest.raises(ValidationError):
        DeployConfig.model_validate({"api": {"userPoolId": "not a pool id"}})


def test_gateway_refusals_say_when_to_retry_and_speak_the_functions_validation_contract(synth):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in _resources(synth, "AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["THROTTLED"]["ResponseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}
    assert responses["QUOTA_EXCEEDED"]["ResponseParameters"] == {
        "gatewayresponse.header.Retry-After": "'3600'"
    }
    invalid = responses["BAD_REQUEST_BODY"]
    assert invalid["StatusCode"] == "422"
    assert '"code": "validation_error"' in invalid["ResponseTemplates"]["application/json"]


@pytest.mark.parametrize(
    "machine_clients",
    [
        {"Reporter": {}},  # client names are lower-case, as in their Cognito names
        {"reporter": {"scopes": ["admin"]}},  # not a platform scope
        {"reporter": {"scopes": []}},  # a client with no scope gets no token
        {"reporter": {"groups": ["has space"]}},  # not a group a document can name
        {"reporter": {"tenant": ""}},
    ],
)
def test_a_machine_client_that_could_not_work_fails_synthesis_by_its_key(machine_clients):
    with pytest.raises(ValidationError, match="api.machineClients"):
        DeployConfig.model_validate({"api": {"machineClients": machine_clients}})


@pytest.mark.parametrize(
    "people_scopes",
    [
        {"default": ["admin"]},
        {"groups": {"editors": ["documents:delete"]}},
        {"groups": {"has space": []}},
        {"x": []},
    ],
)
def test_people_scopes_that_name_no_platform_scope_or_group_fail_synthesis(people_scopes):
    with pytest.raises(ValidationError, match="peopleScopes"):
        DeployConfig.model_validate({"api": {"peopleScopes": people_scopes}})
