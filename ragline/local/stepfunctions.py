"""Step Functions on the local platform: the definition CDK synthesized, run by moto's executor, with
its Lambda tasks run by our handlers.

How moto 5.2.5 runs a Lambda task (with `execute_state_machine` on): both a bare function ARN as
`Resource` and `arn:aws:states:::lambda:invoke` end in `lambda_eval_utils._invoke_lambda_function`,
which builds a boto3 Lambda client with `boto_client_for` and calls `invoke(FunctionName=<ARN from
the definition>, Payload=<bytes>)`. Under `mock_aws` that client is intercepted in-process; in server
mode it goes to the moto server itself on MOTO_PORT. Either way moto's Lambda would need docker to
run the code, so `lambda_tasks_routed` gives moto's executor our own client instead (the only client
that module builds), and moto does the rest as for AWS: a `FunctionError` response becomes the error
named by the payload's `errorType` with the payload as the cause, so `Retry`/`Catch` on a custom name,
`States.TaskFailed` and `States.ALL` behave as in AWS.

- `HandlerInvoker` runs handlers in this process (tests, with `mock_aws`): a raised exception is
  reported as Lambda's Python runtime reports it (`Unhandled`, errorType = the class name).
- `EndpointInvoker` posts to the platform's Lambda Invoke emulator (`ragline dev`: the moto server
  is a separate process, the handlers live in the platform process); the emulator reports failures
  the same way.

moto sleeps for real between retries (`time.sleep` in its retrier, IntervalSeconds an integer ≥ 1,
times BackoffRate per attempt, capped by MaxDelaySeconds). A reused execution name behaves as AWS
documents for standard workflows: the same name and input while the execution runs returns it
again; another input, or any input once it has closed, is ExecutionAlreadyExists. Always pass a
name: moto names an unnamed execution "None" (AWS makes a UUID).

The definition comes from the synthesized template (`local_definition`): its intrinsic functions are
resolved for the local platform, each Lambda function found by the `FUNCTION_TAG` the CDK app puts on
it (its topology name), so the local ARNs point at the functions the topology names. A function of
another stack (`Fn::ImportValue`) is found through that stack's exports: pass its template in `imports`.
"""

from __future__ import annotations

import io
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol
from unittest import mock

from botocore.config import Config
from botocore.exceptions import ClientError

from ragline.topology import FUNCTION_TAG, STATE_MACHINE_TAG, physical_name

LOG = logging.getLogger(__name__)

LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"  # moto's default account: the one any local credentials map to
LAMBDA_FUNCTION = "AWS::Lambda::Function"
STATE_MACHINE = "AWS::StepFunctions::StateMachine"

Invoke = Callable[[Any], Any]  # event -> result, e.g. LocalFunction.invoke (it builds the context)


class LambdaInvoker(Protocol):
    """What moto's executor calls on the Lambda client it builds for a task."""

    def invoke(self, **parameters: Any) -> dict[str, Any]: ...


def function_name(function: str) -> str:
    """A function's name from what Lambda Invoke accepts: a name, a full or partial ARN (a version
    or alias qualifier is dropped: the local platform runs one version of each function)."""
    if ":" not in function:
        return function
    parts = function.split(":")
    if function.startswith("arn:"):
        return parts[6]  # arn:partition:lambda:region:account:function:name[:qualifier]
    if len(parts) >= 3 and parts[1] == "function":
        return parts[2]  # account:function:name[:qualifier]
    return parts[0]  # name:qualifier


def lambda_arn(name: str, region: str = LOCAL_REGION, account: str = LOCAL_ACCOUNT) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


def _not_found(function: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "ResourceNotFoundException", "Message": f"Function not found: {function}"},
            "ResponseMetadata": {"HTTPStatusCode": 404, "RequestId": str(uuid.uuid4())},
        },
        "Invoke",
    )


class HandlerInvoker:
    """Lambda Invoke (RequestResponse) against handlers in this process, by function name."""

    def __init__(self, functions: Mapping[str, Invoke]) -> None:
        self._functions = dict(functions)

    def invoke(self, *, FunctionName: str, Payload: bytes | None = None, **_: Any) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        invoke = self._functions.get(function_name(FunctionName))
        if invoke is None:
            raise _not_found(FunctionName)
        event = json.loads(Payload) if Payload else {}
        try:
            result = invoke(event)
        except Exception as exc:  # noqa: BLE001 - Lambda reports any exception as a function error
            LOG.warning("%s failed: %s: %s", FunctionName, type(exc).__name__, exc)
            trace = traceback.format_tb(exc.__traceback__)[1:]  # from the handler's frame on
            return _function_error(type(exc).__name__, str(exc), trace)
        try:
            body = json.dumps(result)
        except (TypeError, ValueError) as exc:
            return _function_error("Runtime.MarshalError", f"Unable to marshal response: {exc}", [])
        return {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": io.BytesIO(body.encode())}


def _function_error(error_type: str, message: str, stack_trace: list[str]) -> dict[str, Any]:
    """An invocation that failed in the function, as Lambda's Python runtime answers it."""
    payload = {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": str(uuid.uuid4()),
        "stackTrace": stack_trace,
    }
    return {
        "StatusCode": 200,
        "ExecutedVersion": "$LATEST",
        "FunctionError": "Unhandled",
        "Payload": io.BytesIO(json.dumps(payload).encode()),
    }


class EndpointInvoker:
    """Lambda Invoke against a Lambda API endpoint (the platform's emulator, which knows functions by
    name, so ARNs from the definition are reduced to names). No botocore retries: the state's
    `Retry` decides, as in AWS."""

    def __init__(self, endpoint_url: str, region: str = LOCAL_REGION) -> None:
        import boto3

        self._client = boto3.client(
            "lambda",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(retries={"total_max_attempts": 1}, read_timeout=900, connect_timeout=5),
        )

    def invoke(self, *, FunctionName: str, **parameters: Any) -> dict[str, Any]:  # noqa: N803
        return self._client.invoke(FunctionName=function_name(FunctionName), **parameters)


@contextmanager
def lambda_tasks_routed(invoker: LambdaInvoker) -> Iterator[None]:
    """moto's executor invokes Lambda tasks through `invoker` while this is active (process-wide:
    executions run on moto's worker threads)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    def client_for(region: str, service: str, state_credentials: Any = None) -> LambdaInvoker:
        if service != "lambda":
            raise ValueError(f"moto's Lambda task asked for a {service} client")
        return invoker

    with mock.patch.object(lambda_eval_utils, "boto_client_for", client_for):
        yield


@contextmanager
def executing_state_machines() -> Iterator[None]:
    """moto runs the definitions of started executions (off by default; `mock_aws(config=...)` is
    the in-process way to say the same)."""
    from moto.core.config import default_user_config

    with mock.patch.dict(default_user_config, {"stepfunctions": {"execute_state_machine": True}}):
        yield


def wait_for_execution(
    sfn: Any, execution_arn: str, *, timeout_s: float = 30.0, poll_s: float = 0.02
) -> dict[str, Any]:
    """describe_execution once the execution is no longer RUNNING."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still RUNNING after {timeout_s:.0f}s")
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------
# The synthesized definition, resolved for the local platform
# --------------------------------------------------------------------------------------------


class UnresolvedReference(ValueError):
    """A token of the synthesized definition that has no local value."""


def tags(resource: Mapping[str, Any]) -> dict[str, str]:
    raw = resource.get("Properties", {}).get("Tags", [])
    if isinstance(raw, dict):  # AWS::StepFunctions::StateMachine uses a list, some types a map
        return dict(raw)
    return {tag["Key"]: tag["Value"] for tag in raw}


def state_machines(template: Mapping[str, Any]) -> dict[str, str]:
    """Topology name (STATE_MACHINE_TAG) -> logical id, for the tagged state machines of a template."""
    found: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == STATE_MACHINE and (name := tags(resource).get(STATE_MACHINE_TAG)):
            if name in found:
                raise ValueError(f"state machines {found[name]} and {logical_id} are both tagged {name!r}")
            found[name] = logical_id
    return found


class _Resolver:
    """CloudFormation's intrinsic functions, as far as CDK uses them in state machine definitions."""

    def __init__(
        self,
        resources: Mapping[str, Any],
        refs: Mapping[str, str],
        region: str,
        account: str,
        exports: Mapping[str, tuple[Mapping[str, Any], Any]] | None = None,
    ) -> None:
        self._resources = resources
        self._refs = refs
        self._exports = exports or {}
        self._pseudo = {
            "AWS::Partition": "aws",
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::URLSuffix": "amazonaws.com",
        }
        self._region, self._account = region, account

    def value(self, node: Any) -> str:
        if isinstance(node, str):
            return node
        if isinstance(node, dict) and len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Fn::Join":
                separator, items = argument
                return separator.join(self.value(item) for item in items)
            if function == "Ref":
                return self._ref(argument)
            if function == "Fn::GetAtt":
                logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
                return self._get_att(logical_id, attribute)
            if function == "Fn::ImportValue" and isinstance(argument, str):
                if argument not in self._exports:
                    raise UnresolvedReference(
                        f"Fn::ImportValue {argument}: no template in `imports` exports it"
                    )
                resources, value = self._exports[argument]
                exporter = _Resolver(resources, self._refs, self._region, self._account, self._exports)
                return exporter.value(value)
        raise UnresolvedReference(f"unsupported in a local definition: {json.dumps(node)}")

    def _ref(self, name: str) -> str:
        if name in self._refs:
            return self._refs[name]
        if name in self._pseudo:
            return self._pseudo[name]
        if self._type(name) == LAMBDA_FUNCTION:
            return self._function_name(name)
        raise self._unresolved(name, f"Ref {name}")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        key = f"{logical_id}.{attribute}"
        if key in self._refs:
            return self._refs[key]
        if self._type(logical_id) == LAMBDA_FUNCTION and attribute == "Arn":
            return lambda_arn(self._function_name(logical_id), self._region, self._account)
        raise self._unresolved(logical_id, f"Fn::GetAtt {key}")

    def _type(self, logical_id: str) -> str | None:
        resource = self._resources.get(logical_id)
        return resource["Type"] if resource else None

    def _function_name(self, logical_id: str) -> str:
        name = tags(self._resources[logical_id]).get(FUNCTION_TAG)
        if name is None:
            raise UnresolvedReference(
                f"Lambda function {logical_id} has no {FUNCTION_TAG!r} tag, so no local function is "
                "known for it (RaglineFunction tags its functions; tag_function() tags any other)"
            )
        return physical_name(name)

    def _unresolved(self, logical_id: str, token: str) -> UnresolvedReference:
        return UnresolvedReference(
            f"{token} ({self._type(logical_id) or 'not in the template'}) has no local value: "
            f"pass it in refs as {logical_id!r} or '{logical_id}.<attribute>'"
        )


def local_definition(
    template: Mapping[str, Any],
    state_machine: str,
    *,
    refs: Mapping[str, str] | None = None,
    imports: Iterable[Mapping[str, Any]] = (),
    region: str = LOCAL_REGION,
    account: str = LOCAL_ACCOUNT,
) -> str:
    """The ASL that the state machine `state_machine` (a logical id) of a synthesized template
    deploys, with each Lambda function's ARN replaced by its local one. `refs` gives local values
    for other tokens (logical id for Ref, 'LogicalId.Attribute' for Fn::GetAtt): a token left
    unresolved raises `UnresolvedReference` rather than leave a wrong value in the definition.
    `imports`: the app's other templates, whose exports resolve `Fn::ImportValue`."""
    exports = {
        output["Export"]["Name"]: (other["Resources"], output["Value"])
        for other in imports
        for output in other.get("Outputs", {}).values()
        if isinstance(output.get("Export", {}).get("Name"), str)
    }
    resources = template["Resources"]
    resource = resources.get(state_machine)
    if resource is None or resource["Type"] != STATE_MACHINE:
        raise ValueError(f"{state_machine} is not a {STATE_MACHINE} of this template")
    properties = resource["Properties"]
    resolver = _Resolver(resources, refs or {}, region, account, exports)
    if "DefinitionString" in properties:
        text = resolver.value(properties["DefinitionString"])
    elif "Definition" in properties:
        text = json.dumps(_resolve_tree(properties["Definition"], resolver))
    else:
        raise ValueError(f"{state_machine} has no inline definition (DefinitionS3Location is not supported)")
    for key, value in properties.get("DefinitionSubstitutions", {}).items():
        text = text.replace("${" + key + "}", resolver.value(value))
    json.loads(text)  # a definition CloudFormation would accept is JSON
    return text


def _resolve_tree(node: Any, resolver: _Resolver) -> Any:
    if isinstance(node, dict):
        if len(node) == 1 and next(iter(node)) in {"Ref", "Fn::GetAtt", "Fn::Join", "Fn::ImportValue"}:
            return resolver.value(node)
        return {key: _resolve_tree(value, resolver) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_tree(item, resolver) for item in node]
    return node
