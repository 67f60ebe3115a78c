"""cdk-nag AwsSolutions on the whole app: no unacknowledged finding, and no acknowledgment without a
reason or without a finding to acknowledge (infra/cdk/nag.py)."""

from __future__ import annotations

import json

import pytest

from infra.cdk.nag import WILDCARDS, Wildcard, flatten, wildcard_findings


def _violations(report: dict | None) -> list[str]:
    if report is None:
        return []
    return [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]


def test_cdk_nag_reports_no_unacknowledged_finding(synth):
    violations = _violations(synth.validation_report)
    assert not violations, "\n".join(violations)


def test_every_acknowledgment_is_used_and_has_a_reason(synth):
    acknowledged = synth.acknowledged
    assert {name for name, uses in acknowledged.wildcards.items() if uses == 0} == set()
    assert [f for f, uses in acknowledged.findings.items() if uses == 0] == []
    assert acknowledged.runtime > 0
    for reason in [w.reason for w in WILDCARDS] + [f.reason for f in acknowledged.findings]:
        assert len(reason) > 40, reason


def test_acknowledged_rules_are_written_on_the_constructs_not_the_stacks(synth):
    """Narrow: no stack or app carries an acknowledgment (each sits on one resource or role)."""
    for stack in synth.stacks.values():
        assert not [m for m in stack.node.metadata if "acknowledged" in m.type.lower()], stack.stack_name


@pytest.mark.parametrize(
    ("value", "flat"),
    [
        ("*", "*"),
        (
            {"Fn::Join": ["", [{"Fn::GetAtt": ["RawBucket0C3EE094", "Arn"]}, "/raw/*"]]},
            "<RawBucket0C3EE094.Arn>/raw/*",
        ),
        ({"Fn::Join": ["", [{"Fn::ImportValue": "Stack:Export"}, ":*"]]}, "Stack:Export:*"),
        ({"Fn::Join": [":", ["arn", {"Ref": "AWS::Partition"}, "es"]]}, "arn:<AWS::Partition>:es"),
    ],
)
def test_flatten_spells_references_as_cdk_nag_does(value, flat):
    assert flatten(value) == flat


def _rule(name: str) -> Wildcard:
    return next(w for w in WILDCARDS if w.name == name)


def test_a_wildcard_is_acknowledged_only_for_what_it_is():
    """`Resource: *` passes for X-Ray, not for S3; a bucket wildcard does not cover DynamoDB actions."""
    xray = {
        "Effect": "Allow",
        "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        "Resource": "*",
    }
    s3_everywhere = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
    unconditioned_metrics = {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"}
    resourceless = _rule("resourceless")
    assert resourceless.matches("Resource::*", xray)
    assert not resourceless.matches("Resource::*", s3_everywhere)
    assert not resourceless.matches("Resource::*", unconditioned_metrics)
    objects = {
        "Effect": "Allow",
        "Action": "dynamodb:PutItem",
        "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": ["RawBucket0C3EE094", "Arn"]}, "/*"]]},
    }
    ((finding, statement),) = wildcard_findings({"Statement": [objects]})
    assert not any(rule.matches(finding, statement) for rule in WILDCARDS)


def test_the_acknowledged_wildcards_are_the_ones_in_the_templates(synth):
    """Every Resource '*' in any policy of the app is an action without resource-level permissions."""
    for template in synth.templates.values():
        for resource in template["Resources"].values():
            if resource["Type"] != "AWS::IAM::Policy":
                continue
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Effect"] == "Allow" and "*" in json.dumps(statement.get("Resource")).split('"'):
                    assert _rule("resourceless").allows(statement), statement
