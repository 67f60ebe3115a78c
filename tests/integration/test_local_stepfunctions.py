"""A CDK-synthesized state machine runs in moto's Step Functions executor with its Lambda tasks
routed to Python handlers: in-process under `mock_aws`, and against the moto server started the way
`ragline dev` starts it, with the handlers behind the platform's Lambda Invoke emulator.

The stack is defined here (two functions, a state machine with Retry and Catch); it is synthesized
once per module (a few seconds) and the definition each test runs is the one CDK wrote, resolved by
`local_definition`. moto sleeps for real between retries (IntervalSeconds ≥ 1), so only two tests
retry at all."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from ragline.local import stepfunctions
from ragline.local.harness import free_port
from ragline.local.lambda_runtime import LocalFunction
from ragline.local.stepfunctions import (
    LOCAL_ACCOUNT,
    LOCAL_REGION,
    HandlerInvoker,
    UnresolvedReference,
    function_name,
    lambda_arn,
    lambda_tasks_routed,
    local_definition,
    state_machines,
    wait_for_execution,
)
from ragline.topology import FUNCTION_TAG, STATE_MACHINE_TAG, FunctionSpec

ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/local-states"
SAGA = "apply-saga"  # Apply, retried on Transient; Compensate on Permanent or any other task failure
DIRECT = "apply-direct"  # one Task whose Resource is a DefinitionSubstitutions value


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


ERRORS: dict[str, type[Exception]] = {
    "Transient": Transient,
    "Permanent": Permanent,
    "ValueError": ValueError,
}


# --------------------------------------------------------------------------------------------
# The stack, synthesized
# --------------------------------------------------------------------------------------------


def synthesize() -> dict[str, Any]:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    from aws_cdk import App, Duration, Stack
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_stepfunctions as sfn
    from aws_cdk import aws_stepfunctions_tasks as tasks
    from aws_cdk.assertions import Template

    from infra.cdk.constructs.tags import tag_function, tag_state_machine

    stack = Stack(App(), "LocalStepFunctionsTest")

    def function(construct_id: str, name: str) -> lambda_.Function:
        built = lambda_.Function(
            stack,
            construct_id,
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="index.handler",
            code=lambda_.Code.from_inline("def handler(event, context):\n    return event\n"),
        )
        tag_function(built, name)
        return built

    apply, compensate = function("ApplyFunction", "apply"), function("CompensateFunction", "compensate")
    undo = tasks.LambdaInvoke(
        stack,
        "Compensate",
        lambda_function=compensate,
        result_selector={"undone.$": "$.Payload"},
    ).next(sfn.Fail(stack, "ApplyFailed", error="ApplyFailed", cause="compensated"))
    step = tasks.LambdaInvoke(stack, "Apply", lambda_function=apply, payload_response_only=True)
    step.add_retry(errors=["Transient"], max_attempts=2, interval=Duration.seconds(1), backoff_rate=2)
    step.add_catch(undo, errors=["Permanent"], result_path="$.permanent")
    step.add_catch(undo, errors=["States.TaskFailed"], result_path="$.failure")
    saga = sfn.StateMachine(
        stack,
        "Saga",
        definition_body=sfn.DefinitionBody.from_chainable(step.next(sfn.Succeed(stack, "Done"))),
    )
    tag_state_machine(saga, SAGA)
    direct = sfn.StateMachine(
        stack,
        "Direct",
        definition_body=sfn.DefinitionBody.from_string(
            json.dumps(
                {
                    "StartAt": "Call",
                    "States": {"Call": {"Type": "Task", "Resource": "${ApplyArn}", "End": True}},
                }
            )
        ),
        definition_substitutions={"ApplyArn": apply.function_arn},
    )
    tag_state_machine(direct, DIRECT)
    return Template.from_stack(stack).to_json()


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return synthesize()


class Handlers:
    """The stack's two functions. `apply` follows its input's `outcomes`, one per attempt (the last
    repeats): "ok", "block" (waits for `release`, then ok) or an error class name to raise.
    Every call is recorded, in order, as (function, event)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()
        self._attempts: Counter[str] = Counter()

    def apply(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.calls.append(("apply", event))
        attempt = self._attempts[event["id"]]
        self._attempts[event["id"]] += 1
        outcomes = event.get("outcomes", ["ok"])
        outcome = outcomes[min(attempt, len(outcomes) - 1)]
        if outcome == "block":
            self.release.wait(10)
        elif outcome != "ok":
            raise ERRORS[outcome](f"{outcome} on attempt {attempt + 1}")
        return {"id": event["id"], "applied": True, "by": context.function_name}

    def compensate(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.calls.append(("compensate", event))
        return {"undone": event["id"]}

    def functions(self) -> dict[str, LocalFunction]:
        built = [
            LocalFunction(FunctionSpec("apply", "test", "unused"), handler=self.apply),
            LocalFunction(FunctionSpec("compensate", "test", "unused"), handler=self.compensate),
        ]
        return {function.name: function for function in built}

    def order(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def handlers() -> Iterator[Handlers]:
    recorded = Handlers()
    yield recorded
    recorded.release.set()


def create(sfn: Any, template: dict[str, Any], name: str) -> str:
    definition = local_definition(template, state_machines(template)[name])
    return sfn.create_state_machine(name=name, definition=definition, roleArn=ROLE_ARN)["stateMachineArn"]


def run(sfn: Any, state_machine_arn: str, name: str, execution_input: dict[str, Any]) -> dict[str, Any]:
    started = sfn.start_execution(
        stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input)
    )
    return wait_for_execution(sfn, started["executionArn"])


def history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    return sfn.get_execution_history(executionArn=execution_arn)["events"]


def entered(events: list[dict[str, Any]]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


@pytest.fixture
def sfn(handlers: Handlers, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto in-process, executing definitions, Lambda tasks run by `handlers` through LocalFunction."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    invoker = HandlerInvoker({name: function.invoke for name, function in handlers.functions().items()})
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}), lambda_tasks_routed(invoker):
        yield boto3.client(
            "stepfunctions",
            region_name=LOCAL_REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )


# --------------------------------------------------------------------------------------------
# The synthesized definition, resolved
# --------------------------------------------------------------------------------------------


def test_the_definition_is_cdks_with_local_function_arns(template: dict[str, Any]) -> None:
    found = state_machines(template)
    assert set(found) == {SAGA, DIRECT}
    text = local_definition(template, found[SAGA])
    definition = json.loads(text)
    apply = definition["States"]["Apply"]
    assert apply["Resource"] == lambda_arn("ragline-apply")
    compensate = definition["States"]["Compensate"]
    assert compensate["Resource"] == "arn:aws:states:::lambda:invoke"
    assert compensate["Parameters"]["FunctionName"] == lambda_arn("ragline-compensate")
    assert {"ErrorEquals": ["Transient"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 2} in apply[
        "Retry"
    ]
    # Only the tokens changed: the literal parts are CDK's, character for character.
    literal = template["Resources"][found[SAGA]]["Properties"]["DefinitionString"]["Fn::Join"][1]
    for part in literal:
        if isinstance(part, str):
            assert part in text


def test_definition_substitutions_are_resolved(template: dict[str, Any]) -> None:
    definition = json.loads(local_definition(template, state_machines(template)[DIRECT]))
    assert definition["States"]["Call"]["Resource"] == lambda_arn("ragline-apply")


def test_a_function_without_its_tag_or_another_token_is_not_guessed() -> None:
    template = {
        "Resources": {
            "Fn": {"Type": "AWS::Lambda::Function", "Properties": {}},
            "Bus": {"Type": "AWS::Events::EventBus", "Properties": {}},
            "Sm": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "DefinitionString": {
                        "Fn::Join": ["", ['{"Resource":"', {"Fn::GetAtt": ["Fn", "Arn"]}, '"}']]
                    },
                },
            },
            "Sm2": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {"DefinitionString": {"Fn::Join": ["", ['{"Bus":"', {"Ref": "Bus"}, '"}']]}},
            },
        }
    }
    with pytest.raises(UnresolvedReference, match=FUNCTION_TAG):
        local_definition(template, "Sm")
    with pytest.raises(UnresolvedReference, match="Ref Bus"):
        local_definition(template, "Sm2")
    assert json.loads(local_definition(template, "Sm2", refs={"Bus": "ragline"})) == {"Bus": "ragline"}
    template["Resources"]["Fn"]["Properties"]["Tags"] = [{"Key": FUNCTION_TAG, "Value": "x"}]
    assert json.loads(local_definition(template, "Sm")) == {"Resource": lambda_arn("ragline-x")}


def test_function_names_from_what_lambda_invoke_accepts() -> None:
    for given in (
        "ragline-apply",
        "ragline-apply:live",
        f"{LOCAL_ACCOUNT}:function:ragline-apply",
        lambda_arn("ragline-apply"),
        lambda_arn("ragline-apply") + ":$LATEST",
    ):
        assert function_name(given) == "ragline-apply"


def test_the_local_account_is_motos() -> None:
    from moto.core import DEFAULT_ACCOUNT_ID

    assert LOCAL_ACCOUNT == DEFAULT_ACCOUNT_ID
    assert STATE_MACHINE_TAG != FUNCTION_TAG


def test_an_unknown_function_is_lambdas_resource_not_found() -> None:
    with pytest.raises(ClientError) as raised:
        HandlerInvoker({}).invoke(FunctionName=lambda_arn("ragline-missing"), Payload=b"{}")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_result_that_is_not_json_is_lambdas_marshal_error() -> None:
    response = HandlerInvoker({"ragline-set": lambda event: {1, 2}}).invoke(FunctionName="ragline-set")
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "Runtime.MarshalError"


# --------------------------------------------------------------------------------------------
# Executions, in-process
# --------------------------------------------------------------------------------------------


def test_success_path(sfn: Any, template: dict[str, Any], handlers: Handlers) -> None:
    done = run(sfn, create(sfn, template, SAGA), "ok-1", {"id": "d1"})
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == {"id": "d1", "applied": True, "by": "ragline-apply"}
    assert handlers.calls == [("apply", {"id": "d1"})]
    assert entered(history(sfn, done["executionArn"])) == ["Apply", "Done"]


def test_a_transient_error_is_retried_then_succeeds(
    sfn: Any, template: dict[str, Any], handlers: Handlers
) -> None:
    done = run(sfn, create(sfn, template, SAGA), "flaky-1", {"id": "d1", "outcomes": ["Transient", "ok"]})
    assert done["status"] == "SUCCEEDED"
    assert handlers.order() == ["apply", "apply"]
    failed = [e for e in history(sfn, done["executionArn"]) if e["type"] == "LambdaFunctionFailed"]
    assert [e["lambdaFunctionFailedEventDetails"]["error"] for e in failed] == ["Transient"]


def test_retries_stop_after_max_attempts_with_backoff_then_catch(
    sfn: Any, template: dict[str, Any], handlers: Handlers
) -> None:
    done = run(sfn, create(sfn, template, SAGA), "down-1", {"id": "d1", "outcomes": ["Transient"]})
    # MaxAttempts 2: the first attempt and two retries; then `States.TaskFailed` catches the error.
    assert handlers.order() == ["apply", "apply", "apply", "compensate"]
    assert handlers.calls[-1][1]["failure"]["Error"] == "Transient"
    assert done["status"] == "FAILED" and done["error"] == "ApplyFailed"
    events = history(sfn, done["executionArn"])
    failed = [e["timestamp"] for e in events if e["type"] == "LambdaFunctionFailed"]
    scheduled = [e["timestamp"] for e in events if e["type"] == "LambdaFunctionScheduled"]
    waits = [(s - f).total_seconds() for f, s in zip(failed, scheduled[1:], strict=False)]
    # IntervalSeconds 1, BackoffRate 2: 1 s, then 2 s (moto sleeps for real).
    assert 0.95 <= waits[0] < 1.9 and 1.95 <= waits[1] < 2.9, waits


def test_a_permanent_error_is_caught_and_the_compensation_runs(
    sfn: Any, template: dict[str, Any], handlers: Handlers
) -> None:
    done = run(sfn, create(sfn, template, SAGA), "broken-1", {"id": "d1", "outcomes": ["Permanent"]})
    assert handlers.order() == ["apply", "compensate"]  # Permanent is not retried
    caught = handlers.calls[1][1]["permanent"]
    assert caught["Error"] == "Permanent"
    cause = json.loads(caught["Cause"])  # the function error payload, as Lambda's Python runtime writes it
    assert cause["errorType"] == "Permanent" and cause["errorMessage"] == "Permanent on attempt 1"
    assert "self.apply" not in cause["stackTrace"][0] and "raise ERRORS" in cause["stackTrace"][-1]
    assert done["status"] == "FAILED"
    assert (done["error"], done["cause"]) == ("ApplyFailed", "compensated")
    events = history(sfn, done["executionArn"])
    assert entered(events) == ["Apply", "Compensate", "ApplyFailed"]
    assert events[-1]["type"] == "ExecutionFailed"
    succeeded = next(e for e in events if e["type"] == "TaskSucceeded")  # the lambda:invoke integration
    assert json.loads(succeeded["taskSucceededEventDetails"]["output"])["Payload"] == {"undone": "d1"}


def test_any_other_error_is_a_task_failure(sfn: Any, template: dict[str, Any], handlers: Handlers) -> None:
    done = run(sfn, create(sfn, template, SAGA), "bug-1", {"id": "d1", "outcomes": ["ValueError"]})
    assert handlers.order() == ["apply", "compensate"]
    assert handlers.calls[1][1]["failure"]["Error"] == "ValueError"
    assert done["status"] == "FAILED"


def test_a_substituted_function_arn_runs(sfn: Any, template: dict[str, Any], handlers: Handlers) -> None:
    done = run(sfn, create(sfn, template, DIRECT), "direct-1", {"id": "d1"})
    assert done["status"] == "SUCCEEDED" and json.loads(done["output"])["applied"] is True


def test_a_reused_execution_name(sfn: Any, template: dict[str, Any], handlers: Handlers) -> None:
    """moto as AWS documents StartExecution for standard workflows: the same name and input while the
    execution runs returns it again; another input, or any input once it has finished, is
    ExecutionAlreadyExists (AWS frees a name 90 days after the execution closes; moto never does)."""
    machine = create(sfn, template, SAGA)
    blocked = json.dumps({"id": "d1", "outcomes": ["block"]})
    first = sfn.start_execution(stateMachineArn=machine, name="op-1", input=blocked)
    again = sfn.start_execution(stateMachineArn=machine, name="op-1", input=blocked)
    assert again["executionArn"] == first["executionArn"]
    with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(stateMachineArn=machine, name="op-1", input=json.dumps({"id": "d2"}))
    handlers.release.set()
    assert wait_for_execution(sfn, first["executionArn"])["status"] == "SUCCEEDED"
    with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(stateMachineArn=machine, name="op-1", input=blocked)
    assert handlers.order() == ["apply"]


# --------------------------------------------------------------------------------------------
# Against the moto server, as `ragline dev` runs it
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_handlers() -> Iterator[Handlers]:
    recorded = Handlers()
    yield recorded
    recorded.release.set()


@pytest.fixture(scope="module")
def local_platform(server_handlers: Handlers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The emulator started with the platform's command and environment, and the platform's Lambda
    Invoke emulator (in this process) serving the test handlers."""
    import uvicorn

    from ragline.local.gateway import create_lambda_api
    from ragline.local.platform import REPO_ROOT, LocalConfig, environment, start_stages

    config = LocalConfig(moto_port=free_port(), lambda_port=free_port())
    lambda_api = uvicorn.Server(
        uvicorn.Config(
            create_lambda_api(server_handlers.functions()),
            host=config.host,
            port=config.lambda_port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=lambda_api.run, daemon=True)
    thread.start()
    (name, command, ready_url) = start_stages(config)[0][0]
    assert name == "moto"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as output:
        moto = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, **environment(config)}, stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(ready_url, timeout=2).status_code < 500 and lambda_api.started:
                    break
            except httpx.HTTPError:
                pass
            if moto.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start: {Path(log).read_text()[-2000:]}")
            time.sleep(0.1)
        yield boto3.client(
            "stepfunctions",
            region_name=LOCAL_REGION,
            endpoint_url=config.url(config.moto_port),
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
    finally:
        moto.terminate()
        moto.wait(10)
        lambda_api.should_exit = True
        thread.join(5)


def test_the_moto_server_runs_the_definition_with_the_emulators_handlers(
    local_platform: Any, template: dict[str, Any], server_handlers: Handlers
) -> None:
    sfn = local_platform
    machine = create(sfn, template, SAGA)
    done = run(sfn, machine, "server-ok", {"id": "s1"})
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == {"id": "s1", "applied": True, "by": "ragline-apply"}

    server_handlers.calls.clear()
    done = run(sfn, machine, "server-broken", {"id": "s2", "outcomes": ["Permanent"]})
    assert server_handlers.order() == ["apply", "compensate"]
    assert server_handlers.calls[1][1]["permanent"]["Error"] == "Permanent"
    assert (done["status"], done["error"]) == ("FAILED", "ApplyFailed")
    events = history(sfn, done["executionArn"])
    assert entered(events) == ["Apply", "Compensate", "ApplyFailed"]
    assert isinstance(events[0]["timestamp"], datetime)


def test_the_emulators_step_functions_hook_is_scoped() -> None:
    """Outside the hook moto's executor keeps its own Lambda client factory and its default config."""
    from moto.core.config import default_user_config
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    from ragline.local.aws_emulator import step_functions

    original = lambda_eval_utils.boto_client_for
    with step_functions("http://127.0.0.1:1"):
        assert default_user_config["stepfunctions"]["execute_state_machine"] is True
        client = lambda_eval_utils.boto_client_for(region=LOCAL_REGION, service="lambda")
        assert isinstance(client, stepfunctions.EndpointInvoker)
    assert lambda_eval_utils.boto_client_for is original
    assert default_user_config["stepfunctions"]["execute_state_machine"] is False
