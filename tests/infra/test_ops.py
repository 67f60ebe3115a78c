"""The dashboard and the alarms of stacks/ops.py: every alarm the runbook explains exists, watches
what it says and notifies the alarm topic; every queue's DLQ has one."""

from __future__ import annotations

import json
from pathlib import Path

from ragline.endpoints.breaker import METRIC_NAME as BREAKER_METRIC
from ragline.topology import TOPOLOGY

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
CDK_JSON = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"]


def _alarms(synth) -> dict[str, dict]:
    return {
        a["Properties"]["AlarmName"]: a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm", "Ops").values()
    }


def test_every_alarm_notifies_the_alarm_topic(synth):
    alarms = _alarms(synth)
    topic = synth.logical_id(synth.stacks["Platform"].alarm_topic)
    assert alarms
    for name, alarm in alarms.items():
        assert len(alarm["AlarmActions"]) == 1 and topic in json.dumps(alarm["AlarmActions"]), name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_any_message_in_any_dead_letter_queue_alarms(synth):
    alarms = _alarms(synth)
    platform = synth.stacks["Platform"]
    stage = CDK_JSON["stage"]
    for spec in TOPOLOGY.queues:
        alarm = alarms[f"ragline-{stage}-dlq-{spec.name}"]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
        dlq = synth.logical_id(platform.dead_letter_queues[spec.name])
        assert dlq in json.dumps(alarm["Dimensions"]), spec.name


def test_api_5xx_rate_p99_latency_and_saga_failures_alarm(synth):
    alarms = _alarms(synth)
    stage = CDK_JSON["stage"]
    rate = alarms[f"ragline-{stage}-api-5xx-rate"]
    assert rate["Threshold"] == CDK_JSON["ops"]["api5xxRatePercent"]
    expressions = [m["Expression"] for m in rate["Metrics"] if "Expression" in m]
    assert expressions == ["IF(requests > 0, 100 * errors / requests, 0)"]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in rate["Metrics"] if "MetricStat" in m}
    assert names == {"5XXError", "Count"}
    latency = alarms[f"ragline-{stage}-api-p99-latency"]
    assert latency["ExtendedStatistic"] == "p99" and latency["MetricName"] == "Latency"
    assert latency["Threshold"] == CDK_JSON["ops"]["apiP99LatencyMs"]
    for name in synth.stacks["Saga"].state_machines:
        saga = alarms[f"ragline-{stage}-saga-{name}-failed"]
        watched = {m["MetricStat"]["Metric"]["MetricName"] for m in saga["Metrics"] if "MetricStat" in m}
        assert watched == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}


def test_the_runbook_explains_every_alarm(synth):
    text = RUNBOOK.read_text()
    stage = CDK_JSON["stage"]
    for name in _alarms(synth):
        kind = name.removeprefix(f"ragline-{stage}-")
        if kind.startswith("dlq-"):
            kind = "dlq-<queue>"
        elif kind.startswith("saga-"):
            kind = "saga-<machine>-failed"
        assert f"### `{kind}`" in text, name
    assert "ragline dlq redrive" in text and "start-message-move-task" in text


def test_the_dashboard_shows_api_queues_dlqs_endpoints_ingestion_and_sagas(synth):
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard", "Ops").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for title in (
        "API latency",
        "API errors",
        "Queue depth",
        "Oldest message age",
        "Dead-letter queues",
        "Ingestion rate",
        "Model endpoint latency",
        "Sagas",
        "circuit breakers",
        "Reconciler findings",
    ):
        assert title in body, title
    # the breaker states of every process, found by a SEARCH over the metric the breaker emits
    assert "SEARCH(" in body and "{Ragline,endpoint,service} MetricName=" in body
    assert BREAKER_METRIC in body
    for metric in ("ModelLatency", "ApproximateAgeOfOldestMessage", "5XXError", "NumberOfMessagesDeleted"):
        assert metric in body, metric


def test_tracing_is_on_for_the_api_every_function_and_the_state_machines(synth):
    (stage,) = synth.resources("AWS::ApiGateway::Stage", "Api").values()
    assert stage["Properties"]["TracingEnabled"] is True
    ours = [
        fn["Properties"]
        for fn in synth.resources("AWS::Lambda::Function").values()
        if fn["Properties"].get("Description", "").startswith("ragline")  # not CDK's own helpers
    ]
    assert len(ours) > len(TOPOLOGY.functions)  # every function and the pre-token trigger
    assert all(fn["TracingConfig"] == {"Mode": "Active"} for fn in ours)
    machines = synth.resources("AWS::StepFunctions::StateMachine", "Saga").values()
    assert machines and all(m["Properties"]["TracingConfiguration"] == {"Enabled": True} for m in machines)
