"""The reconciler in the CDK app: ingest-reconcile on a schedule, with exactly the access it needs,
asking the index context's index-maintenance function (by name: the index stack is deployed after
ingest's) and nothing else."""

from __future__ import annotations

import json

from infra.cdk.naming import function_name
from infra.cdk.stacks.ops import RECONCILE_METRICS
from ragline.topology import TOPOLOGY
from tests.infra.conftest import actions_of

LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
# The platform key, through the data services only (tests/infra/test_encryption.py checks how).
KEY = {"kms:Decrypt", "kms:GenerateDataKey"}


def _own(synth, stack: str, name: str) -> list[dict]:
    fn = synth.stacks[stack].functions[name]
    return [s for s in synth.statements(synth.logical_id(fn.role), stack) if not actions_of(s) <= LOGS]


def test_the_reconciler_runs_on_its_schedule(synth):
    fn = synth.stacks["Ingest"].functions["ingest-reconcile"]
    fn_id = synth.logical_id(fn.function)
    rules = [
        r
        for r in synth.resources("AWS::Events::Rule", "Ingest").values()
        if any(fn_id in json.dumps(t) for t in r["Properties"].get("Targets", []))
    ]
    assert [r["Properties"]["ScheduleExpression"] for r in rules] == [
        TOPOLOGY.function("ingest-reconcile").schedule
    ]
    assert rules[0]["Properties"]["Targets"][0]["RetryPolicy"]["MaximumRetryAttempts"] == 0
    permissions = synth.resources("AWS::Lambda::Permission", "Ingest").values()
    assert any(
        p["Properties"]["Principal"] == "events.amazonaws.com"
        and fn_id in json.dumps(p["Properties"]["FunctionName"])
        for p in permissions
    )


def test_the_reconciler_reads_the_tables_and_invokes_only_index_maintenance(synth):
    ingest = synth.stacks["Ingest"]
    statements = _own(synth, "Ingest", "ingest-reconcile")
    actions = set().union(*(actions_of(s) for s in statements))
    allowed = {
        "dynamodb:Scan",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "lambda:InvokeFunction",
        "events:PutEvents",
    }
    assert actions - XRAY - KEY <= allowed and {"dynamodb:Scan", "lambda:InvokeFunction"} <= actions
    tables = {name: synth.logical_id(table) for name, table in ingest.tables.items()}
    touched = {
        name for name, table_id in tables.items() if any(table_id in json.dumps(s) for s in statements)
    }
    assert touched == {"documents", "operations"}
    operations = [s for s in statements if tables["operations"] in json.dumps(s)]
    assert set().union(*(actions_of(s) for s in operations)) == {"dynamodb:GetItem"}
    [invoke] = [s for s in statements if "lambda:InvokeFunction" in actions_of(s)]
    stage = synth.stacks["Platform"].node.try_get_context("stage") or "dev"
    assert f"function:{function_name(stage, 'index-maintenance')}" in json.dumps(invoke["Resource"])
    fn_id = synth.logical_id(ingest.functions["ingest-reconcile"].function)
    variables = synth.templates["Ingest"]["Resources"][fn_id]["Properties"]["Environment"]["Variables"]
    assert variables["RAGLINE_INDEX_MAINTENANCE_FUNCTION"] == function_name(stage, "index-maintenance")


def test_index_maintenance_is_named_writes_the_index_and_publishes_nothing(synth):
    index = synth.stacks["Index"]
    fn = index.functions["index-maintenance"]
    properties = synth.resources("AWS::Lambda::Function", "Index")[synth.logical_id(fn.function)][
        "Properties"
    ]
    stage = synth.stacks["Platform"].node.try_get_context("stage") or "dev"
    assert properties["FunctionName"] == function_name(stage, "index-maintenance")
    worker = _own(synth, "Index", "index-worker")
    maintenance = _own(synth, "Index", "index-maintenance")
    es = {a for s in worker for a in actions_of(s) if a.startswith("es:")}
    assert es and es <= {a for s in maintenance for a in actions_of(s)}
    assert not any("events:PutEvents" in actions_of(s) for s in maintenance)


def test_any_reconciler_finding_alarms(synth):
    """The alarm sums what the handler publishes in repair mode (tests/integration/test_reconcile.py
    checks the handler emits every one of RECONCILE_METRICS with these dimensions)."""
    alarms = {
        a["Properties"]["AlarmName"]: a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm", "Ops").values()
    }
    stage = synth.stacks["Platform"].node.try_get_context("stage") or "dev"
    alarm = alarms[f"ragline-{stage}-reconcile-findings"]
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    stats = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert sorted(s["MetricName"] for s in stats) == sorted(RECONCILE_METRICS)
    for stat in stats:
        assert stat["Namespace"] == "Ragline"
        assert {d["Name"]: d["Value"] for d in stat["Dimensions"]} == {
            "service": "ingest-reconcile",
            "mode": "repair",
        }
    [expression] = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
    assert sorted(expression.split(" + ")) == sorted(name.lower() for name in RECONCILE_METRICS)
