"""cdk-nag AwsSolutions: the checks, and every acknowledgment with its reason.

cdk-nag 3 runs as a CDK validation plugin and fails synthesis on any finding not acknowledged with
`Validations.of(construct).acknowledge(id=..., reason=...)`. Acknowledgments here are as narrow as
cdk-nag allows: on the one construct, for the one finding (`AwsSolutions-IAM5[Resource::<arn>]`,
not the whole rule).

IAM5 (wildcards) is acknowledged by what the wildcard *is*, not by who has it: every Allow statement
of every IAM policy in the app is read, and a wildcard finding is acknowledged only when a rule below
recognises it (an object key under one bucket, a table's indexes, X-Ray's `Resource: *`, ...). A
wildcard no rule explains is left for cdk-nag to report. tests/infra/test_nag.py fails on any
unacknowledged finding and on any rule that no longer matches anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, App, CfnElement, CfnResource, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

PACK = "AwsSolutions"

# Actions that have no resource-level permissions (the service authorises "*" only).
RESOURCELESS_ACTIONS = {
    "xray:PutTraceSegments": "X-Ray accepts trace segments for Resource '*' only (active tracing)",
    "xray:PutTelemetryRecords": "X-Ray accepts telemetry for Resource '*' only (active tracing)",
    "ecr:GetAuthorizationToken": "ECR's registry login token is not tied to a repository",
    "xray:GetSamplingRules": "X-Ray sampling rules are read for Resource '*' only (traced state machines)",
    "xray:GetSamplingTargets": "X-Ray sampling targets are read for Resource '*' only (traced state machines)",
    "cloudwatch:PutMetricData": "CloudWatch metrics have no ARN (restricted by a cloudwatch:namespace condition)",
    # Step Functions' logging to CloudWatch Logs is a vended log delivery: these support '*' only.
    **{
        f"logs:{action}": "Step Functions log delivery (vended logs) supports Resource '*' only"
        for action in (
            "CreateLogDelivery",
            "GetLogDelivery",
            "UpdateLogDelivery",
            "DeleteLogDelivery",
            "ListLogDeliveries",
            "PutResourcePolicy",
            "DescribeResourcePolicies",
            "DescribeLogGroups",
        )
    },
}
# cloudwatch:PutMetricData must carry the namespace condition to count as narrowed.
CONDITIONED = {"cloudwatch:PutMetricData": "cloudwatch:namespace"}


def flatten(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag spells it in a finding id (utils/flatten-cfn-reference)."""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Fn::Join":
            delimiter, items = arg
            return delimiter.join(flatten(item) for item in items)
        if fn == "Fn::Sub":
            return flatten(arg)
        if fn == "Fn::GetAtt":
            return f"<{flatten(arg[0])}.{flatten(arg[1])}>"
        if fn == "Fn::ImportValue":
            return flatten(arg)
        if fn == "Ref":
            return f"<{flatten(arg)}>"
    return json.dumps(value, separators=(",", ":"))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Wildcard:
    """A kind of IAM wildcard that is acknowledged wherever it appears, for `reason`.

    `finding` matches the part inside `AwsSolutions-IAM5[...]` (`Action::s3:List*`,
    `Resource::<RawBucket0C3EE094.Arn>/raw/*`); `allows` may further require something of the
    statement it comes from (its actions, its condition)."""

    name: str
    finding: str
    reason: str
    allows: Callable[[dict[str, Any]], bool] = lambda _statement: True

    def matches(self, finding: str, statement: dict[str, Any]) -> bool:
        return re.fullmatch(self.finding, finding) is not None and self.allows(statement)


def _only_resourceless_actions(statement: dict[str, Any]) -> bool:
    actions = _as_list(statement.get("Action", []))
    conditions = json.dumps(statement.get("Condition", {}))
    return all(
        action in RESOURCELESS_ACTIONS and (action not in CONDITIONED or CONDITIONED[action] in conditions)
        for action in actions
    )


def _only(*prefixes: str) -> Callable[[dict[str, Any]], bool]:
    return lambda statement: all(a.startswith(prefixes) for a in _as_list(statement.get("Action", [])))


WILDCARDS: tuple[Wildcard, ...] = (
    Wildcard(
        "resourceless",
        r"Resource::\*",
        "Only actions without resource-level permissions use '*': "
        + "; ".join(f"{a}: {why}" for a, why in RESOURCELESS_ACTIONS.items()),
        _only_resourceless_actions,
    ),
    Wildcard(
        "s3-grant-actions",
        r"Action::s3:(GetObject|GetBucket|List|DeleteObject|Abort|PutObject)\*",
        "CDK's Bucket.grant_read/grant_write/grant_delete action groups (e.g. GetObject* = GetObject, "
        "GetObjectVersion, GetObjectTagging...), on one bucket of the function's own context only",
        _only("s3:"),
    ),
    Wildcard(
        "s3-objects",
        r"Resource::.*Bucket[^/]*/([a-z0-9-]+/)?\*",
        "Object keys are document ids, unknown at deploy time: every object of one bucket, under the "
        "bucket's own prefix where the function only touches that prefix",
        _only("s3:", "kms:"),
    ),
    Wildcard(
        "dynamodb-indexes",
        r"Resource::.*Table[^/]*/index/\*",
        "The table's own global secondary indexes (CDK's Table.grant* adds them for Query)",
        _only("dynamodb:"),
    ),
    Wildcard(
        "opensearch-paths",
        r"Resource::arn:<AWS::Partition>:es:<AWS::Region>:<AWS::AccountId>:domain/ragline-[a-z0-9-]+/(\*|\*/_search|_plugins/_security/api/rolesmapping/\*)",
        "HTTP paths (indexes) inside the one ragline domain: OpenSearch authorises by path, and indexes "
        "are created per collection at run time. Readers get `<index>/_search` paths only; the master user "
        "(the role-mapping custom resource) gets the role mappings only.",
        _only("es:ESHttp"),
    ),
    Wildcard(
        "lambda-versions",
        r"Resource::.*Function[^:]*:\*",
        "Versions and aliases of one function (CDK's grant_invoke / Step Functions' LambdaInvoke)",
        lambda s: _as_list(s.get("Action", [])) == ["lambda:InvokeFunction"],
    ),
    Wildcard(
        "sagemaker-endpoint-logs",
        r"Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/Endpoints/\*",
        "SageMaker creates the endpoint's log group (/aws/sagemaker/Endpoints/<endpoint>) itself, named "
        "after an endpoint CloudFormation names; the prefix is SageMaker's",
        _only("logs:"),
    ),
    Wildcard(
        "kms-grant-actions",
        r"Action::kms:(GenerateDataKey|ReEncrypt)\*",
        "CDK's Key.grant_encrypt_decrypt action groups, on the platform key only",
        _only("kms:"),
    ),
)


def _foreign_references(stacks: Iterable[Stack]) -> dict[str, tuple[Stack, CfnElement]]:
    """logical id -> (stack, element), to spell a cross-stack reference as CloudFormation will import it."""
    found: dict[str, tuple[Stack, CfnElement]] = {}
    for stack in stacks:
        for construct in stack.node.find_all():
            if isinstance(construct, CfnElement) and Stack.of(construct) is stack:
                found[stack.resolve(construct.logical_id)] = (stack, construct)
    return found


def _as_imported(value: Any, consumer: Stack, elements: Mapping[str, tuple[Stack, CfnElement]]) -> Any:
    """`value` with each reference to another stack replaced by the Fn::ImportValue CDK will put there
    (Stack.export_value creates the very export the automatic reference would)."""
    if isinstance(value, list):
        return [_as_imported(v, consumer, elements) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and ("Ref" in value or "Fn::GetAtt" in value):
        ref = value.get("Ref")
        logical_id = ref if ref is not None else value["Fn::GetAtt"][0]
        owner = elements.get(logical_id) if isinstance(logical_id, str) else None
        if owner and owner[0] is not consumer and isinstance(owner[1], CfnResource):
            producer, element = owner
            token = element.ref if ref is not None else element.get_att(value["Fn::GetAtt"][1]).to_string()
            return consumer.resolve(producer.export_value(token))
        return value
    return {k: _as_imported(v, consumer, elements) for k, v in value.items()}


def wildcard_findings(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(finding, statement) for every wildcard cdk-nag's IAM5 reports in a resolved policy document."""
    findings = []
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        findings += [(f"Action::{a}", statement) for a in _as_list(statement.get("Action", [])) if "*" in a]
        for resource in _as_list(statement.get("Resource", [])):
            flat = flatten(resource)
            if "*" in flat:
                findings.append((f"Resource::{flat}", statement))
    return findings


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{PACK}-{rule}", reason=reason))


def acknowledge_wildcards(app: App) -> dict[str, int]:
    """Acknowledge each IAM5 finding that a WILDCARDS rule explains; returns the uses of each rule."""
    stacks = [c for c in app.node.children if isinstance(c, Stack)]
    elements = _foreign_references(stacks)
    uses = {rule.name: 0 for rule in WILDCARDS}
    for stack in stacks:
        for construct in stack.node.find_all():
            if not isinstance(construct, iam.CfnPolicy) or Stack.of(construct) is not stack:
                continue
            document = _as_imported(stack.resolve(construct.policy_document), stack, elements)
            for finding, statement in wildcard_findings(document):
                rule = next((r for r in WILDCARDS if r.matches(finding, statement)), None)
                if rule is not None:
                    acknowledge(construct, f"IAM5[{finding}]", rule.reason)
                    uses[rule.name] += 1
    return uses


@dataclass(frozen=True)
class Finding:
    """A non-wildcard finding acknowledged on the constructs whose path matches `path`."""

    path: str
    rule: str
    reason: str


RUNTIME_REASON = (
    "Python 3.12 is the pinned target: the Powertools layer (AWSLambdaPowertoolsPythonV3-python312), "
    "the cp312 dependency wheels (infra.cdk.packaging) and the local venv are built for it; moving is "
    "one change in constructs/function.py plus the layer version"
)
FINDINGS: tuple[Finding, ...] = (
    Finding(
        r"Api/Api/CloudWatchRole",
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
        "API Gateway's account-level logging role: the AWS managed policy is the documented one for it "
        "(logs only), and API Gateway uses one such role per account and region",
    ),
    Finding(
        r"Ingest/BucketNotificationsHandler[0-9a-f]+/Role",
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "CDK's own singleton that turns on the raw bucket's EventBridge notifications at deploy time; "
        "the managed policy grants it CloudWatch Logs only",
    ),
    Finding(
        r"Api/Identity/Users",
        "COG2",
        "MFA is optional, not required: machine clients use the client-credentials flow (no MFA "
        "possible) and people may enrol TOTP; require it per organisation with the pool's MFA setting",
    ),
    Finding(
        r"Api/Identity/Users",
        "COG8",
        "The Essentials feature plan: Plus (threat protection) is a per-MAU cost an organisation opts "
        "into; the API's WAF, usage plans and throttling already limit credential stuffing at the door",
    ),
    Finding(
        r"Index/Search",
        "OS1",
        "Not in a VPC, by choice (infra/cdk/README.md, 'Network placement'): access is IAM SigV4 only, "
        "with a resource policy naming the search roles, fine-grained access control, HTTPS/TLS 1.2 "
        "and node-to-node encryption; a VPC would put every search client (and NAT costs) into it",
    ),
    Finding(
        r"Index/Search",
        "OS3",
        "No dedicated master nodes at the default size (one data node, opensearch.instanceCount); "
        "production sizes add them with the instance count",
    ),
)
# Acknowledged only while the domain runs a single node (zone awareness needs two or more).
SINGLE_NODE_FINDINGS: tuple[Finding, ...] = (
    Finding(
        r"Index/Search",
        "OS4",
        "Zone awareness needs two or more data nodes; the default is one (opensearch.instanceCount: set "
        "2+ and zone awareness turns on)",
    ),
    Finding(
        r"Index/Search",
        "OS7",
        "Zone awareness needs two or more data nodes; the default is one (opensearch.instanceCount: set "
        "2+ and zone awareness turns on)",
    ),
)


def acknowledge_findings(app: App, findings: Iterable[Finding]) -> dict[Finding, int]:
    """Acknowledge each finding on every construct its path matches; returns how many each matched."""
    uses = {finding: 0 for finding in findings}
    for construct in app.node.find_all():
        for finding in uses:
            if re.fullmatch(finding.path, construct.node.path):
                acknowledge(construct, finding.rule, finding.reason)
                uses[finding] += 1
    return uses


def acknowledge_runtime(app: App, runtime: str) -> int:
    """L1 (not the newest runtime) on every function that runs the pinned runtime."""
    from aws_cdk import aws_lambda as lambda_

    count = 0
    for construct in app.node.find_all():
        if isinstance(construct, lambda_.CfnFunction) and construct.runtime == runtime:
            acknowledge(construct, "L1", RUNTIME_REASON)
            count += 1
    return count


@dataclass
class Acknowledged:
    """What acknowledge_all acknowledged: uses per wildcard rule and per finding (tests read it)."""

    wildcards: dict[str, int]
    findings: dict[Finding, int]
    runtime: int


def acknowledge_all(app: App, *, runtime: str, single_node_search: bool) -> Acknowledged:
    """Every acknowledgment of the app. Call once, after every stack is built."""
    findings = FINDINGS + (SINGLE_NODE_FINDINGS if single_node_search else ())
    return Acknowledged(
        wildcards=acknowledge_wildcards(app),
        findings=acknowledge_findings(app, findings),
        runtime=acknowledge_runtime(app, runtime),
    )


def add_checks(app: App) -> None:
    """cdk-nag AwsSolutions as a CDK validation plugin: findings fail `cdk synth`."""
    from cdk_nag import AwsSolutionsChecks

    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
