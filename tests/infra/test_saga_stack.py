"""The document-delete state machine as synthesized: its states, Retry and Catch, tracing and
logging, the least privilege of everyone involved, and the exported definition the local platform
runs (docs/statemachines/), which must be exactly what the app synthesizes now."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from infra.cdk.statemachines import export_path, exported_definitions
from ragline.local.stepfunctions import lambda_arn, local_definition, state_machines
from ragline.saga import (
    ACTIVATE,
    CHECK_SWITCHED,
    COMPLETE,
    DELETE_OBJECTS,
    DELETE_OLD_VECTORS,
    DELETE_RECORD,
    DELETE_STEPS,
    DELETE_VECTORS,
    FAIL_OPERATION,
    INDEX_VERSION,
    INVALIDATE_CACHE,
    MARK_DELETING,
    PARSE_AND_CHUNK,
    PUBLISH_DELETED,
    REINDEX,
    RELEASE_VERSION,
    REMOVE_NEW_VERSION,
    RESERVE_VERSION,
    SWITCH_VERSION,
    TRANSIENT_ERRORS,
    UNMARK_DELETING,
    UPDATE_STEPS,
)
from ragline.topology import DELETE_STATE_MACHINE, UPDATE_STATE_MACHINE, physical_name
from tests.infra.conftest import actions_of

AFTER_PIVOT = (DELETE_OBJECTS, DELETE_RECORD, PUBLISH_DELETED, COMPLETE)
INGEST_STEPS = (MARK_DELETING, *AFTER_PIVOT, UNMARK_DELETING, FAIL_OPERATION)
INDEX_STEPS = (DELETE_VECTORS, REINDEX)


def _definition(synth, machine: str = DELETE_STATE_MACHINE) -> dict[str, Any]:
    template = synth.templates["Saga"]
    logical_id = state_machines(template)[machine]
    return json.loads(local_definition(template, logical_id, imports=synth.templates.values()))


def test_the_exported_definition_is_what_the_app_synthesizes(synth):
    exported = exported_definitions(synth.templates)
    assert set(exported) == {DELETE_STATE_MACHINE, UPDATE_STATE_MACHINE}
    for name in (DELETE_STATE_MACHINE, UPDATE_STATE_MACHINE):
        path = export_path(name)
        assert path.read_text() == exported[name], f"{path} is stale: run `python -m infra.cdk.statemachines`"


def test_the_forward_path_runs_every_step_in_order_on_the_owning_context(synth):
    states = _definition(synth)["States"]
    assert _definition(synth)["StartAt"] == MARK_DELETING
    path, name = [], MARK_DELETING
    while states[name]["Type"] == "Task":
        path.append(name)
        name = states[name]["Next"]
    assert tuple(path) == DELETE_STEPS
    assert states[name]["Type"] == "Succeed"
    for step in INGEST_STEPS:
        assert states[step]["Resource"] == lambda_arn(physical_name("ingest-saga")), step
        assert states[step]["Parameters"] == {"step": step, "saga.$": "$"}
    for step in INDEX_STEPS:
        assert states[step]["Resource"] == lambda_arn(physical_name("index-saga")), step


def test_every_task_retries_transient_errors_with_backoff(synth):
    states = _definition(synth)["States"]
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        first = state["Retry"][0]
        assert first["ErrorEquals"] == list(TRANSIENT_ERRORS), name
        assert first["BackoffRate"] > 1 and first["MaxAttempts"] >= 3, name
    busy = states[MARK_DELETING]["Retry"][1]
    assert busy["ErrorEquals"] == ["DocumentBusy"] and busy["MaxAttempts"] >= 5


def test_failures_before_the_pivot_are_compensated_after_it_retried_then_reported(synth):
    states = _definition(synth)["States"]
    assert states[MARK_DELETING]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": UNMARK_DELETING}
    ]
    assert states[DELETE_VECTORS]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": REINDEX}
    ]
    assert states[REINDEX]["Next"] == UNMARK_DELETING
    assert states[UNMARK_DELETING]["Next"] == FAIL_OPERATION
    assert states[FAIL_OPERATION]["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"
    for step in AFTER_PIVOT:
        assert states[step]["Retry"][-1]["ErrorEquals"] == ["States.ALL"], step
        assert states[step]["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": FAIL_OPERATION}
        ]
    for step in (REINDEX, UNMARK_DELETING):
        assert states[step]["Catch"][0]["Next"] == FAIL_OPERATION
    assert "Catch" not in states[FAIL_OPERATION]


def test_the_state_machine_is_named_traced_logged_and_tagged(synth):
    template = synth.template("Saga")
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineName": "ragline-dev-document-delete",
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL", "IncludeExecutionData": False}),
            "Tags": Match.array_with([{"Key": "ragline:state-machine", "Value": DELETE_STATE_MACHINE}]),
        },
    )


def _assert_invokes_exactly_the_two_saga_functions(synth, role_part: str) -> None:
    """The state machine whose role's logical id contains `role_part`."""
    template = synth.templates["Saga"]
    roles = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::IAM::Role"]
    (role,) = [r for r in roles if role_part in r]
    invokes = [s for s in synth.statements(role, "Saga") if "lambda:InvokeFunction" in actions_of(s)]
    resources = json.dumps([s["Resource"] for s in invokes])
    for name in ("IngestSaga", "IndexSaga"):
        assert name in resources
    for other in ("IngestApi", "IndexWorker", "RetrieveApi"):
        assert other not in resources


def test_the_state_machine_may_invoke_exactly_the_two_saga_functions(synth):
    _assert_invokes_exactly_the_two_saga_functions(synth, "DocumentDelete")


def test_only_the_ingest_api_may_start_a_delete_or_an_update_and_knows_the_state_machines(synth):
    ingest = synth.stacks["Ingest"]
    resources = synth.templates["Ingest"]["Resources"]
    for stack_name in ("Ingest", "Index", "Retrieve", "Context"):
        for name, fn in synth.stacks[stack_name].functions.items():
            role_stack = "Index" if stack_name in ("Index", "Retrieve") else stack_name
            starts = [
                s
                for s in synth.statements(synth.logical_id(fn.role), role_stack)
                if "states:StartExecution" in actions_of(s)
            ]
            assert bool(starts) == (name == "ingest-api"), name
            for statement in starts:
                assert actions_of(statement) == {"states:StartExecution"}
            started = json.dumps([s["Resource"] for s in starts])
            for machine in ("document-delete", "document-update"):
                assert (f"stateMachine:ragline-dev-{machine}" in started) == (name == "ingest-api"), name
    env = resources[synth.logical_id(ingest.functions["ingest-api"].function)]["Properties"]["Environment"]
    assert "document-delete" in json.dumps(env["Variables"]["RAGLINE_DELETE_STATE_MACHINE_ARN"])
    assert "document-update" in json.dumps(env["Variables"]["RAGLINE_UPDATE_STATE_MACHINE_ARN"])


def test_ingest_saga_may_only_touch_its_tables_objects_under_its_prefixes_and_put_events(synth):
    ingest = synth.stacks["Ingest"]
    fn = ingest.functions["ingest-saga"]
    statements = [
        s
        for s in synth.statements(synth.logical_id(fn.role), "Ingest")
        if not actions_of(s) <= {"logs:CreateLogStream", "logs:PutLogEvents"}
    ]
    allowed = {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:PutItem",
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:GetObject",  # ParseAndChunk reads the original (raw/ only)
        "s3:PutObject",  # and writes the parsed files (parsed/ only)
        "events:PutEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "kms:Decrypt",  # the platform key, only through S3/DynamoDB/SQS/EventBridge (kms:ViaService)
        "kms:GenerateDataKey",
    }
    actions = set().union(*(actions_of(s) for s in statements))
    assert actions <= allowed, actions - allowed
    for statement in statements:
        if actions_of(statement) & {"kms:Decrypt", "kms:GenerateDataKey"}:
            assert "kms:ViaService" in statement["Condition"]["StringEquals"], statement
    reads = [s for s in statements if actions_of(s) == {"s3:GetObject"}]
    writes = [s for s in statements if actions_of(s) == {"s3:PutObject"}]
    assert len(reads) == 1 and "/raw/*" in json.dumps(reads[0]["Resource"])
    assert len(writes) == 1 and "/parsed/*" in json.dumps(writes[0]["Resource"])
    tables = {name: synth.logical_id(table) for name, table in ingest.tables.items()}
    touched = {
        name for name, table_id in tables.items() if any(table_id in json.dumps(s) for s in statements)
    }
    assert touched == {"documents", "operations", "collections"}
    collections = [s for s in statements if tables["collections"] in json.dumps(s)]
    assert set().union(*(actions_of(s) for s in collections)) == {"dynamodb:GetItem"}
    deletes = [s for s in statements if "s3:DeleteObject" in actions_of(s)]
    assert len(deletes) == 2
    for statement, prefix in zip(deletes, ("/raw/*", "/parsed/*"), strict=True):
        assert prefix in json.dumps(statement["Resource"])


def test_index_saga_has_what_the_index_worker_has_on_the_index_and_publishes_nothing(synth):
    index = synth.stacks["Index"]
    worker = synth.statements(synth.logical_id(index.functions["index-worker"].role), "Index")
    saga = synth.statements(synth.logical_id(index.functions["index-saga"].role), "Index")
    es = {a for s in worker for a in actions_of(s) if a.startswith("es:")}
    assert es and es <= {a for s in saga for a in actions_of(s)}
    assert not any("events:PutEvents" in actions_of(s) for s in saga)


# ------------------------------------------------------------------------------ document-update

UPDATE_INGEST = (RESERVE_VERSION, PARSE_AND_CHUNK, SWITCH_VERSION, INVALIDATE_CACHE, COMPLETE, CHECK_SWITCHED)
UPDATE_INDEX = (INDEX_VERSION, ACTIVATE, DELETE_OLD_VECTORS, REMOVE_NEW_VERSION)


def test_the_update_runs_every_step_in_order_on_the_owning_context(synth):
    definition = _definition(synth, UPDATE_STATE_MACHINE)
    states = definition["States"]
    assert definition["StartAt"] == RESERVE_VERSION
    path, name = [], RESERVE_VERSION
    while states[name]["Type"] == "Task":
        path.append(name)
        name = states[name]["Next"]
    assert tuple(path) == UPDATE_STEPS
    assert states[name]["Type"] == "Succeed"
    for step in (*UPDATE_INGEST, RELEASE_VERSION, FAIL_OPERATION):
        assert states[step]["Resource"] == lambda_arn(physical_name("ingest-saga")), step
        assert states[step]["Parameters"] == {"step": step, "saga.$": "$"}
    for step in UPDATE_INDEX:
        assert states[step]["Resource"] == lambda_arn(physical_name("index-saga")), step
    for name, state in states.items():
        if state["Type"] == "Task":
            first = state["Retry"][0]
            assert first["ErrorEquals"] == list(TRANSIENT_ERRORS), name
            assert first["BackoffRate"] > 1 and first["MaxAttempts"] >= 3, name


def test_the_update_is_compensated_in_reverse_before_the_switch_and_retried_after(synth):
    states = _definition(synth, UPDATE_STATE_MACHINE)["States"]

    def catch(step: str, path: str = "$.error") -> list[dict]:
        return [{"ErrorEquals": ["States.ALL"], "ResultPath": path, "Next": step}]

    assert states[RESERVE_VERSION]["Catch"] == catch(RELEASE_VERSION)
    assert states[PARSE_AND_CHUNK]["Catch"] == catch(RELEASE_VERSION)
    assert states[INDEX_VERSION]["Catch"] == catch(REMOVE_NEW_VERSION)
    assert states[ACTIVATE]["Catch"] == catch(REMOVE_NEW_VERSION)
    assert states[REMOVE_NEW_VERSION]["Next"] == RELEASE_VERSION
    assert states[RELEASE_VERSION]["Next"] == FAIL_OPERATION
    for step in (REMOVE_NEW_VERSION, RELEASE_VERSION, CHECK_SWITCHED):
        assert states[step]["Catch"] == catch(FAIL_OPERATION, "$.compensation_error"), step
    # The pivot: a failed switch asks whether it happened, and goes on or is undone accordingly.
    assert states[SWITCH_VERSION]["Catch"] == catch(CHECK_SWITCHED)
    choice = states[states[CHECK_SWITCHED]["Next"]]
    assert choice["Type"] == "Choice"
    assert choice["Choices"] == [
        {"Variable": "$.switch.switched", "BooleanEquals": True, "Next": DELETE_OLD_VECTORS}
    ]
    assert choice["Default"] == REMOVE_NEW_VERSION
    for step in (DELETE_OLD_VECTORS, INVALIDATE_CACHE, COMPLETE):
        assert states[step]["Retry"][-1]["ErrorEquals"] == ["States.ALL"], step
        assert states[step]["Catch"] == catch(FAIL_OPERATION), step
    assert states[FAIL_OPERATION]["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"
    assert "Catch" not in states[FAIL_OPERATION]


def test_the_update_state_machine_is_named_traced_logged_tagged_and_invokes_the_saga_functions(synth):
    synth.template("Saga").has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineName": "ragline-dev-document-update",
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL", "IncludeExecutionData": False}),
            "Tags": Match.array_with([{"Key": "ragline:state-machine", "Value": UPDATE_STATE_MACHINE}]),
        },
    )
    _assert_invokes_exactly_the_two_saga_functions(synth, "DocumentUpdate")
