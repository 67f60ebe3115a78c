"""The SageMaker endpoints: sizing, autoscaling, serverless and images from the `models` context key.

Most tests synthesize the Models stack alone from a context of their own (the values asserted are the
ones each test sets); the invoke permissions are checked on the whole app (`synth`, from cdk.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template
from pydantic import ValidationError

from infra.cdk.config import MODEL_NAMES, DeployConfig, load_config
from infra.cdk.stacks.context import ANSWERS_FUNCTION
from infra.cdk.stacks.models import VARIANT, ModelsStack
from ragline.topology import TOPOLOGY

CDK_JSON = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"]
INVOKE = ["sagemaker:InvokeEndpoint"]
INVOKE_STREAM = ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"]


def real_time(instance_type: str, count: int = 1, **extra: Any) -> dict[str, Any]:
    return {"instanceType": instance_type, "instanceCount": count, **extra}


def autoscaling(low: int, high: int, target: float, scale_in: int, scale_out: int) -> dict[str, Any]:
    return {
        "minCapacity": low,
        "maxCapacity": high,
        "targetInvocationsPerInstance": target,
        "scaleInCooldownSeconds": scale_in,
        "scaleOutCooldownSeconds": scale_out,
    }


def load(models: dict[str, Any], **context: Any) -> tuple[App, DeployConfig]:
    """The app's context as `cdk synth` reads it: `models` replaces cdk.json's."""
    app = App(context={"models": models, **context})
    return app, load_config(app)


def models_stack(tmp_path: Path, models: dict[str, Any]) -> tuple[ModelsStack, Template]:
    for model in MODEL_NAMES:
        (tmp_path / "sagemaker" / model).mkdir(parents=True, exist_ok=True)
        (tmp_path / "sagemaker" / model / "Dockerfile").write_text("FROM scratch\n")
    app = App(context={"models": models, "sagemakerDir": str(tmp_path / "sagemaker")})
    stack = ModelsStack(app, "Models", config=load_config(app))
    return stack, Template.from_stack(stack)


def child(stack: ModelsStack, model: str, construct_id: str) -> str:
    """The logical id of one resource of an endpoint (an L1, or an L2's default child)."""
    found = stack.endpoints[model].node.find_child(construct_id)
    return stack.get_logical_id(found.node.default_child or found)


def resource_of(stack: ModelsStack, template: Template, model: str, construct_id: str) -> dict:
    return template.to_json()["Resources"][child(stack, model, construct_id)]["Properties"]


def of_type(template: Template | dict, resource_type: str) -> dict[str, dict]:
    """logical id -> properties of every resource of a type (a Template, or a synthesized template)."""
    resources = (template.to_json() if isinstance(template, Template) else template)["Resources"]
    return {k: v["Properties"] for k, v in resources.items() if v["Type"] == resource_type}


def statements(template: Template, role_id: str) -> list[dict]:
    return [
        s
        for p in of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Roles"]
        for s in p["PolicyDocument"]["Statement"]
    ]


# --- real-time endpoints ---------------------------------------------------------------------


def test_endpoint_configs_carry_the_configured_instance_type_and_count(tmp_path):
    models = {"embedding": real_time("ml.c5.2xlarge", 3), "llm": real_time("ml.g5.12xlarge", 2)}
    stack, template = models_stack(tmp_path, models)
    for model, configured in models.items():
        (variant,) = resource_of(stack, template, model, "EndpointConfig")["ProductionVariants"]
        assert variant["VariantName"] == VARIANT
        assert variant["InstanceType"] == configured["instanceType"]
        assert variant["InitialInstanceCount"] == configured["instanceCount"]
        assert variant["ModelName"] == {"Fn::GetAtt": [child(stack, model, "Model"), "ModelName"]}
        assert "ServerlessConfig" not in variant
        endpoint = resource_of(stack, template, model, "Endpoint")
        assert "RetainAllVariantProperties" not in endpoint  # nothing scales it: the config's count holds
    template.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 0)
    template.resource_count_is("AWS::ApplicationAutoScaling::ScalingPolicy", 0)


def test_autoscaling_tracks_invocations_per_instance_between_min_and_max(tmp_path):
    scaling = {
        "embedding": autoscaling(2, 7, 123.5, scale_in=240, scale_out=45),
        "llm": autoscaling(1, 3, 4, scale_in=900, scale_out=30),
    }
    models = {
        "embedding": real_time("ml.m5.xlarge", 2, autoscaling=scaling["embedding"]),
        "llm": real_time("ml.g5.2xlarge", 1, autoscaling=scaling["llm"]),
    }
    stack, template = models_stack(tmp_path, models)
    targets = of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert len(targets) == 2
    template.resource_count_is("AWS::ApplicationAutoScaling::ScalingPolicy", 2)
    for model, configured in scaling.items():
        endpoint_id = child(stack, model, "Endpoint")
        target_id = stack.get_logical_id(stack.endpoints[model].scalable_target.node.default_child)
        target = targets[target_id]
        assert target["ServiceNamespace"] == "sagemaker"
        assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
        assert target["ResourceId"] == {
            "Fn::Join": [
                "",
                ["endpoint/", {"Fn::GetAtt": [endpoint_id, "EndpointName"]}, f"/variant/{VARIANT}"],
            ]
        }
        assert (target["MinCapacity"], target["MaxCapacity"]) == (
            configured["minCapacity"],
            configured["maxCapacity"],
        )
        assert "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint" in json.dumps(target["RoleARN"])
        template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {
                "ScalingTargetId": {"Ref": target_id},
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                    },
                    "TargetValue": configured["targetInvocationsPerInstance"],
                    "ScaleInCooldown": configured["scaleInCooldownSeconds"],
                    "ScaleOutCooldown": configured["scaleOutCooldownSeconds"],
                },
            },
        )
        # A deploy keeps the count autoscaling reached instead of resetting it to instanceCount.
        assert resource_of(stack, template, model, "Endpoint")["RetainAllVariantProperties"] is True
    assert of_type(template, "AWS::IAM::Role").keys() == {
        child(stack, model, "ExecutionRole") for model in MODEL_NAMES
    }  # no role of our own for autoscaling: the service-linked one


def test_cdk_json_autoscales_both_endpoints(synth):
    """The shipped context: both endpoints real-time, each with its own target tracking policy."""
    stack = synth.stacks["Models"]
    template = synth.templates["Models"]
    targets = of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    policies = of_type(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    for model in MODEL_NAMES:
        configured = CDK_JSON["models"][model]["autoscaling"]
        target_id = stack.get_logical_id(stack.endpoints[model].scalable_target.node.default_child)
        assert (targets[target_id]["MinCapacity"], targets[target_id]["MaxCapacity"]) == (
            configured["minCapacity"],
            configured["maxCapacity"],
        )
        (policy,) = [p for p in policies.values() if p["ScalingTargetId"] == {"Ref": target_id}]
        tracking = policy["TargetTrackingScalingPolicyConfiguration"]
        assert tracking["TargetValue"] == configured["targetInvocationsPerInstance"]


# --- serverless ------------------------------------------------------------------------------


def test_serverless_embedding_has_memory_and_concurrency_and_nothing_to_autoscale(tmp_path):
    serverless = {"memorySizeInMB": 3072, "maxConcurrency": 17}
    llm_scaling = autoscaling(1, 2, 9, scale_in=300, scale_out=60)
    models = {
        "embedding": {"serverless": serverless, "networkIsolation": False},
        "llm": real_time("ml.g5.xlarge", 1, autoscaling=llm_scaling),
    }
    stack, template = models_stack(tmp_path, models)
    (variant,) = resource_of(stack, template, "embedding", "EndpointConfig")["ProductionVariants"]
    assert variant["ServerlessConfig"] == {
        "MemorySizeInMB": serverless["memorySizeInMB"],
        "MaxConcurrency": serverless["maxConcurrency"],
    }
    assert not {"InstanceType", "InitialInstanceCount", "InitialVariantWeight"} & set(variant)
    assert resource_of(stack, template, "embedding", "Model")["EnableNetworkIsolation"] is False
    assert "RetainAllVariantProperties" not in resource_of(stack, template, "embedding", "Endpoint")
    assert stack.endpoints["embedding"].scalable_target is None
    # Only the LLM's instances scale.
    (target,) = of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert child(stack, "llm", "Endpoint") in json.dumps(target["ResourceId"])
    assert len(of_type(template, "AWS::ApplicationAutoScaling::ScalingPolicy")) == 1


# --- images and model data -------------------------------------------------------------------


def test_an_image_uri_replaces_the_built_image_and_the_role_may_pull_it(tmp_path):
    account, region, repository = "763104351884", "us-west-2", "djl-inference"
    image = f"{account}.dkr.ecr.{region}.amazonaws.com/{repository}:0.33.0-lmi15.0.0-cu128"
    environment = {
        "HF_MODEL_ID": "/opt/ml/model",
        "OPTION_ROLLING_BATCH": "lmi-dist",
        "TENSOR_PARALLEL_DEGREE": "4",
    }
    model_data = "s3://my-models-bucket/llm/qwen/model.tar.gz"
    llm = real_time(
        "ml.g5.12xlarge",
        imageUri=image,
        environment=environment,
        modelDataUrl=model_data,
        networkIsolation=False,
        startupHealthCheckTimeoutSeconds=1800,
        modelDataDownloadTimeoutSeconds=1200,
    )
    stack, template = models_stack(tmp_path, {"embedding": real_time("ml.m5.large"), "llm": llm})
    assert stack.endpoints["llm"].image is None and stack.endpoints["embedding"].image is not None

    container = resource_of(stack, template, "llm", "Model")["PrimaryContainer"]
    assert container["Image"] == image
    assert container["Environment"] == environment
    assert container["ModelDataUrl"] == model_data
    (variant,) = resource_of(stack, template, "llm", "EndpointConfig")["ProductionVariants"]
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == llm["startupHealthCheckTimeoutSeconds"]
    assert variant["ModelDataDownloadTimeoutInSeconds"] == llm["modelDataDownloadTimeoutSeconds"]

    granted = statements(template, child(stack, "llm", "ExecutionRole"))
    repository_arn = {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, f":ecr:{region}:{account}:repository/{repository}"],
        ]
    }
    (pull,) = [s for s in granted if "ecr:BatchGetImage" in s["Action"]]
    assert pull["Resource"] == repository_arn
    assert any(s["Action"] == "ecr:GetAuthorizationToken" for s in granted)
    (read,) = [s for s in granted if s["Action"] == "s3:GetObject"]
    bucket_key = model_data.removeprefix("s3://")
    assert read["Resource"] == {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{bucket_key}"]]}
    # The embedding endpoint keeps its own built image and is granted nothing on the LLM's.
    embedding = json.dumps(statements(template, child(stack, "embedding", "ExecutionRole")))
    assert repository not in embedding and "my-models-bucket" not in embedding


def test_only_built_images_need_an_image_context(tmp_path):
    for path in ("lambda/app", "lambda/deps", "sagemaker/embedding"):
        (tmp_path / path).mkdir(parents=True)
    (tmp_path / "sagemaker" / "embedding" / "Dockerfile").write_text("FROM scratch\n")
    dirs = {"lambdaAssetDir": str(tmp_path / "lambda"), "sagemakerDir": str(tmp_path / "sagemaker")}
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/tgi@sha256:" + "a" * 64
    _, pulled = load(
        {"embedding": real_time("ml.m5.large"), "llm": real_time("ml.g5.xlarge", imageUri=image)}, **dirs
    )
    pulled.check_assets()  # no sagemaker/llm/Dockerfile, and none needed
    _, built = load({"embedding": real_time("ml.m5.large"), "llm": real_time("ml.g5.xlarge")}, **dirs)
    with pytest.raises(SystemExit, match=r"no Dockerfile: .*llm"):
        built.check_assets()


# --- invalid configuration -------------------------------------------------------------------

SERVERLESS = {"serverless": {"memorySizeInMB": 2048, "maxConcurrency": 5}, "networkIsolation": False}
LLM = real_time("ml.g5.xlarge")


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            {
                "embedding": real_time("ml.m5.large", 3, autoscaling=autoscaling(5, 2, 100, 300, 60)),
                "llm": LLM,
            },
            r"models\.embedding\.autoscaling\n.*minCapacity \(5\) is greater than maxCapacity \(2\)",
        ),
        (
            {
                "embedding": real_time("ml.m5.large", 1, autoscaling=autoscaling(0, 2, 100, 300, 60)),
                "llm": LLM,
            },
            r"models\.embedding\.autoscaling\.minCapacity\n.*greater than or equal to 1",
        ),
        (
            {"embedding": real_time("ml.m5.large", 1, autoscaling=autoscaling(1, 2, 0, 300, 60)), "llm": LLM},
            r"targetInvocationsPerInstance\n.*greater than 0",
        ),
        (
            {"embedding": real_time("ml.m5.large", 1, autoscaling=autoscaling(1, 2, 50, -1, 60)), "llm": LLM},
            r"scaleInCooldownSeconds\n.*greater than or equal to 0",
        ),
        (
            {
                "embedding": real_time("ml.m5.large", 6, autoscaling=autoscaling(1, 4, 100, 300, 60)),
                "llm": LLM,
            },
            r"instanceCount \(6\) is outside autoscaling minCapacity\.\.maxCapacity \(1\.\.4\)",
        ),
        ({"embedding": real_time("m5.large"), "llm": LLM}, r"models\.embedding\.instanceType\n"),
        (
            {"embedding": {"instanceCount": 2}, "llm": LLM},
            r"instanceType is required for a real-time endpoint",
        ),
        (
            {"embedding": {**SERVERLESS, "autoscaling": autoscaling(1, 2, 50, 300, 60)}, "llm": LLM},
            r"serverless endpoints have no instances: remove autoscaling",
        ),
        (
            {"embedding": {**SERVERLESS, "instanceType": "ml.m5.large"}, "llm": LLM},
            r"serverless endpoints have no instances: remove instanceType",
        ),
        (
            {"embedding": {"serverless": SERVERLESS["serverless"]}, "llm": LLM},
            r"serverless inference does not support network isolation",
        ),
        (
            {
                "embedding": {**SERVERLESS, "serverless": {"memorySizeInMB": 1500, "maxConcurrency": 5}},
                "llm": LLM,
            },
            r"serverless\.memorySizeInMB\n",
        ),
        (
            {
                "embedding": {**SERVERLESS, "serverless": {"memorySizeInMB": 1024, "maxConcurrency": 201}},
                "llm": LLM,
            },
            r"serverless\.maxConcurrency\n.*less than or equal to 200",
        ),
        ({"embedding": real_time("ml.m5.large"), "llm": SERVERLESS}, r"the llm endpoint must be real-time"),
        (
            {"embedding": real_time("ml.m5.large")},
            r"configure exactly the models embedding, llm; got embedding",
        ),
        (
            {"embedding": real_time("ml.m5.large"), "llm": {**LLM, "imageUri": "ghcr.io/huggingface/tgi:3"}},
            r"'ghcr\.io/huggingface/tgi:3' is not an ECR image URI",
        ),
        (
            {"embedding": real_time("ml.m5.large", modelDataUrl="s3://bucket-only"), "llm": LLM},
            r"models\.embedding\.modelDataUrl\n",
        ),
        (
            {"embedding": real_time("ml.m5.large", autoscale={"minCapacity": 1}), "llm": LLM},
            r"models\.embedding\.autoscale\n.*Extra inputs are not permitted",
        ),
    ],
)
def test_invalid_model_settings_fail_synthesis_naming_the_key(models, message):
    with pytest.raises(ValidationError, match=message):
        load(models)


def test_the_settings_used_above_are_otherwise_valid():
    """The invalid cases each break one rule: the same shapes with the rules kept load."""
    llm_scaling = autoscaling(1, 4, 100, 300, 60)
    _, config = load({"embedding": SERVERLESS, "llm": real_time("ml.g5.xlarge", 2, autoscaling=llm_scaling)})
    assert config.models["embedding"].serverless.max_concurrency == SERVERLESS["serverless"]["maxConcurrency"]
    assert config.models["llm"].autoscaling.max_capacity == llm_scaling["maxCapacity"]


# --- who may invoke which endpoint -----------------------------------------------------------


def _actions(statement: dict) -> list[str]:
    actions = statement["Action"]
    return sorted([actions] if isinstance(actions, str) else actions)


def _endpoint_arn_exports(synth) -> dict[str, str]:
    """export name -> model, for the Models outputs that carry an endpoint's ARN."""
    models = synth.stacks["Models"]
    arns = {
        json.dumps(models.resolve(endpoint.endpoint_arn)): name for name, endpoint in models.endpoints.items()
    }
    return {
        output["Export"]["Name"]: arns[json.dumps(output["Value"])]
        for output in synth.templates["Models"].get("Outputs", {}).values()
        if json.dumps(output["Value"]) in arns
    }


def _sagemaker_statements(synth, role) -> list[dict]:
    """Every statement naming a sagemaker action in any policy attached to a role, in any stack."""
    role_stack = Stack.of(role)
    role_id = role_stack.get_logical_id(role.node.default_child)
    found = []
    for name, template in synth.templates.items():
        for policy in of_type(template, "AWS::IAM::Policy").values():
            attached = any(
                (ref == {"Ref": role_id} and synth.stacks[name] is role_stack)
                or ("Fn::ImportValue" in ref and role_id in json.dumps(ref))
                for ref in policy["Roles"]
            )
            if attached:
                found += [
                    s
                    for s in policy["PolicyDocument"]["Statement"]
                    if any(a.startswith("sagemaker:") for a in _actions(s))
                ]
    return found


def test_functions_may_invoke_exactly_their_endpoint(synth):
    exports = _endpoint_arn_exports(synth)
    assert sorted(exports.values()) == sorted(MODEL_NAMES)
    expected = {
        "index": ("embedding", INVOKE),
        "retrieve": ("embedding", INVOKE),
        "context": ("llm", INVOKE_STREAM),
    }
    checked = set()
    for stack_name in ("Ingest", "Index", "Retrieve", "Context"):
        for name, fn in synth.stacks[stack_name].functions.items():
            granted = _sagemaker_statements(synth, fn.role)
            context = TOPOLOGY.function(name).context
            # In context, only the answers function generates (cache invalidation calls no model).
            if context not in expected or (context == "context" and name != ANSWERS_FUNCTION):
                assert granted == [], name
                continue
            model, actions = expected[context]
            assert granted, name
            for statement in granted:
                assert statement["Effect"] == "Allow"
                resource = statement["Resource"]
                assert isinstance(resource, dict) and "Fn::ImportValue" in resource, (name, resource)
                assert exports[resource["Fn::ImportValue"]] == model, name  # its endpoint's ARN, no other
                assert _actions(statement) == actions, name
            checked.add(context)
    assert checked == set(expected)
