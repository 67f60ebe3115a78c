"""The notify stack as synthesized: its tables and functions with least privilege, the bus rules and
queues (with DLQs) that feed it, one Schema Registry entry per public event (the catalogue's own
schemas, in draft 4), and the SES identity cdk.json names."""

from __future__ import annotations

import json

from aws_cdk import App
from aws_cdk.assertions import Match, Template
from jsonschema import Draft4Validator

from infra.cdk.app import cdk_json_context
from infra.cdk.config import load_config
from infra.cdk.stacks.notify import NotifyStack, schema_name
from infra.cdk.stacks.platform import PlatformStack
from ragline.contracts import PUBLIC_EVENT_TYPES
from ragline.eventcatalog import example_path
from ragline.topology import TOPOLOGY
from tests.infra.conftest import actions_of, policy_statements
from tests.unit.test_event_catalogue import DOCS


def test_every_public_event_is_in_the_schema_registry_as_the_catalogue_says(synth):
    template = synth.template("Notify")
    template.resource_count_is("AWS::EventSchemas::Registry", 1)
    schemas = synth.resources("AWS::EventSchemas::Schema", "Notify")
    by_name = {s["Properties"]["SchemaName"]: s["Properties"] for s in schemas.values()}
    assert set(by_name) == {schema_name(d) for d in PUBLIC_EVENT_TYPES}
    for detail in PUBLIC_EVENT_TYPES:
        properties = by_name[schema_name(detail)]
        assert properties["Type"] == "JSONSchemaDraft4"
        content = json.loads(properties["Content"])
        Draft4Validator.check_schema(content)
        # the registry's schema accepts the catalogue's example, and refuses another event's
        Draft4Validator(content).validate(json.loads((DOCS / example_path(detail)).read_text()))
        other = next(d for d in PUBLIC_EVENT_TYPES if d is not detail)
        assert not Draft4Validator(content).is_valid(json.loads((DOCS / example_path(other)).read_text()))


def test_the_bus_rules_send_every_public_event_to_the_notify_queue(synth):
    platform = synth.template("Platform")
    queues = synth.resources("AWS::SQS::Queue", "Platform")
    notify_queue = next(k for k in queues if k.startswith("NotifyEvents") and "Dlq" not in k)
    rules = [
        r["Properties"]
        for r in synth.resources("AWS::Events::Rule", "Platform").values()
        if any(t["Arn"] == {"Fn::GetAtt": [notify_queue, "Arn"]} for t in r["Properties"].get("Targets", []))
    ]
    routed = {
        (s, t) for r in rules for s in r["EventPattern"]["source"] for t in r["EventPattern"]["detail-type"]
    }
    expected = {(f"ragline.{stage}", "DocumentFailed") for stage in ("ingest", "index")}
    expected |= {(d.SOURCE, d.DETAIL_TYPE) for d in PUBLIC_EVENT_TYPES}
    assert routed == expected
    for name in ("notify-events", "notify-deliveries"):
        spec = TOPOLOGY.queue(name)
        platform.has_resource_properties(
            "AWS::SQS::Queue",
            {
                "VisibilityTimeout": spec.visibility_timeout_s,
                "RedrivePolicy": {
                    "maxReceiveCount": spec.max_receive_count,
                    "deadLetterTargetArn": Match.any_value(),
                },
            },
        )


def _policy_statements(template: dict, role_prefix: str) -> list[dict]:
    """The statements of the one role of the notify stack's `template` whose logical id starts so."""
    (role_id,) = [
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith(role_prefix)
    ]
    return policy_statements({"Notify": template}, role_id, "Notify")


def _actions(statements: list[dict]) -> set[str]:
    return {a for s in statements for a in actions_of(s)}


def test_only_delivery_reads_the_signing_keys_and_only_the_api_writes_them(synth):
    template = synth.templates["Notify"]
    secrets = next(k for k in template["Resources"] if k.startswith("WebhookSecretsTable"))

    def on_secrets(role: str) -> set[str]:
        statements = [
            s for s in _policy_statements(template, role) if secrets in json.dumps(s.get("Resource"))
        ]
        return _actions(statements)

    assert on_secrets("NotifyApiRole") == {"dynamodb:PutItem", "dynamodb:DeleteItem"}
    assert on_secrets("NotifyDeliverRole") == {"dynamodb:GetItem"}
    assert on_secrets("NotifyFanoutRole") == set()
    assert "sqs:SendMessage" in _actions(_policy_statements(template, "NotifyFanoutRole"))
    assert "events:PutEvents" in _actions(_policy_statements(template, "NotifyDeliverRole"))
    # no email sender in cdk.json: no identity, and nobody may send email
    Template.from_json(template).resource_count_is("AWS::SES::EmailIdentity", 0)
    assert not any(a.startswith("ses:") for a in _actions(_policy_statements(template, "NotifyDeliverRole")))


def test_an_email_sender_in_cdk_json_becomes_an_ses_identity_only_delivery_may_send_from(synth):
    lambda_dir = synth.app_dir.parent
    app = App(
        context={
            **cdk_json_context(),
            "lambdaAssetDir": str(lambda_dir),
            "notify": {"emailSender": "ragline@example.com"},
        }
    )
    config = load_config(app)
    platform = PlatformStack(app, "Platform", config=config)
    template = Template.from_stack(NotifyStack(app, "Notify", config=config, platform=platform))
    template.has_resource_properties("AWS::SES::EmailIdentity", {"EmailIdentity": "ragline@example.com"})
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Environment": {
                "Variables": Match.object_like({"RAGLINE_NOTIFY_EMAIL_SENDER": "ragline@example.com"})
            }
        },
    )
    statements = _policy_statements(template.to_json(), "NotifyDeliverRole")
    sending = [s for s in statements if s["Action"] == "ses:SendEmail"]
    assert len(sending) == 1 and "identity/ragline@example.com" in json.dumps(sending[0]["Resource"])
    assert "ses:SendEmail" not in _actions(_policy_statements(template.to_json(), "NotifyApiRole"))
