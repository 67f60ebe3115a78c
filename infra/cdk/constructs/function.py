"""One Lambda function per topology FunctionSpec, built one way.

Python 3.12 on x86_64, its own log group with retention, X-Ray active, the Powertools layer, the
dependencies layer staged by infra.cdk.packaging, and (ASGI apps) the Lambda Web Adapter layer.
Roles are passed in: each function gets its own, and the owning stack decides its grants.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Aws, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.tags import tag_function
from infra.cdk.naming import function_name, pascal
from infra.cdk.packaging import ASGI_HANDLER, ASGI_PORT
from ragline.topology import TOPOLOGY, FunctionSpec, QueueSpec

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.X86_64

POWERTOOLS_LAYER_ACCOUNT = "017000801446"
WEB_ADAPTER_LAYER_ACCOUNT = "753240598075"

# What the Lambda Web Adapter needs: its wrapper starts `run.sh` (the handler), which serves the ASGI
# app on PORT; response_stream makes the adapter use InvokeWithResponseStream semantics.
WEB_ADAPTER_ENV = {
    "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
    "AWS_LWA_INVOKE_MODE": "response_stream",
    "PORT": str(ASGI_PORT),
}


def lambda_role(scope: Construct, spec: FunctionSpec) -> iam.Role:
    """A role for exactly one function; no managed policies (logs are granted on its own log group)."""
    return iam.Role(
        scope,
        f"{pascal(spec.name)}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"ragline {spec.name} function",
    )


class LambdaRuntime(Construct):
    """The code asset and layers shared by the functions of one stack.

    One per stack on purpose: a layer version exported across stacks blocks every later update of it
    ("export in use"), and the asset is hashed and uploaded once anyway."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        self.code = lambda_.Code.from_asset(str(config.app_code_dir))
        self.dependencies = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=lambda_.Code.from_asset(str(config.deps_layer_dir)),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="ragline third-party dependencies (infra.cdk.packaging --deps)",
        )
        self.powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "Powertools",
            f"arn:{Aws.PARTITION}:lambda:{region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
            f"AWSLambdaPowertoolsPythonV3-python312-x86_64:{config.layers.powertools_version}",
        )
        self.web_adapter = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "WebAdapter",
            f"arn:{Aws.PARTITION}:lambda:{region}:{WEB_ADAPTER_LAYER_ACCOUNT}:layer:"
            f"LambdaAdapterLayerX86:{config.layers.web_adapter_version}",
        )


class RaglineFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        spec: FunctionSpec,
        *,
        runtime: LambdaRuntime,
        role: iam.Role,
        config: DeployConfig,
        environment: Mapping[str, str],
        queue: sqs.IQueue | None = None,
        queue_spec: QueueSpec | None = None,
    ) -> None:
        super().__init__(scope, pascal(spec.name))
        self.spec = spec
        self.role = role
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=config.log_retention,
            removal_policy=config.cdk_removal_policy,
        )
        env = {
            "POWERTOOLS_SERVICE_NAME": f"ragline-{spec.context}",
            "POWERTOOLS_METRICS_NAMESPACE": "Ragline",
            **environment,
        }
        layers = [runtime.powertools, runtime.dependencies]
        if spec.asgi:
            env |= WEB_ADAPTER_ENV
            layers.append(runtime.web_adapter)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=runtime.code,
            handler=ASGI_HANDLER if spec.asgi else spec.handler,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_s),
            role=role,
            layers=layers,
            environment=env,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            description=f"ragline {spec.name} ({spec.handler})",
            function_name=function_name(config.stage, spec.name) if spec.named else None,
        )
        if spec.schedule:
            events.Rule(
                self,
                "Schedule",
                schedule=events.Schedule.expression(spec.schedule),
                targets=[targets.LambdaFunction(self.function, retry_attempts=0)],
                description=f"runs {spec.name} ({spec.schedule})",
            )
        tag_function(self.function, spec.name)
        # Logs: only this function's own log group (instead of the AWSLambdaBasicExecutionRole managed policy).
        iam.Policy(
            self,
            "LogsPolicy",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[self.log_group.log_group_arn],  # ends in :* (every stream)
                )
            ],
        )
        if spec.queue:
            if queue is None or queue_spec is None:
                raise ValueError(f"{spec.name} consumes {spec.queue!r}: pass the queue and its spec")
            self.function.add_event_source(
                sources.SqsEventSource(
                    queue,
                    batch_size=queue_spec.batch_size,
                    report_batch_item_failures=True,
                )
            )


def asset_function(
    scope: Construct,
    construct_id: str,
    *,
    config: DeployConfig,
    directory: Path,
    handler: str,
    role: iam.IRole,
    timeout: Duration,
    description: str,
    memory_size: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> lambda_.Function:
    """A small stand-alone function deployed from its own directory (no ragline code, no layers):
    `<construct_id>Logs` with retention, logs granted on it alone, X-Ray active."""
    log_group = logs.LogGroup(
        scope, f"{construct_id}Logs", retention=config.log_retention, removal_policy=config.cdk_removal_policy
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn]
        )
    )
    return lambda_.Function(
        scope,
        construct_id,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        code=lambda_.Code.from_asset(str(directory), exclude=["__pycache__"]),
        handler=handler,
        memory_size=memory_size,
        timeout=timeout,
        role=role,
        log_group=log_group,
        tracing=lambda_.Tracing.ACTIVE,
        environment=dict(environment) if environment is not None else None,
        description=description,
    )


def context_functions(
    scope: Construct,
    context: str,
    *,
    config: DeployConfig,
    environment: Mapping[str, str],
    queues: Mapping[str, sqs.IQueue],
    roles: Mapping[str, iam.Role] | None = None,
) -> dict[str, RaglineFunction]:
    """Every topology function of one bounded context, each with its own role (made here unless given)."""
    runtime = LambdaRuntime(scope, "Runtime", config=config)
    built = {}
    for spec in TOPOLOGY.functions:
        if spec.context != context:
            continue
        built[spec.name] = RaglineFunction(
            scope,
            spec,
            runtime=runtime,
            role=(roles or {}).get(spec.name) or lambda_role(scope, spec),
            config=config,
            environment=environment,
            queue=queues.get(spec.queue) if spec.queue else None,
            queue_spec=TOPOLOGY.queue(spec.queue) if spec.queue else None,
        )
    if not built:
        raise ValueError(f"the topology has no function in context {context!r}")
    return built
