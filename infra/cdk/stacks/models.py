"""SageMaker real-time endpoints for the embedding model and the LLM.

Each image is a DockerImageAsset built from sagemaker/<model>/ at `cdk deploy` (synth only hashes the
directory; it needs no docker engine). Instance types and counts come from the `models` context key.
"""

from __future__ import annotations

from aws_cdk import Aws, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.cdk.config import MODEL_NAMES, DeployConfig, ModelConfig
from infra.cdk.naming import pascal

VARIANT = "AllTraffic"


class ModelEndpoint(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, name: str, model: ModelConfig, image_dir: str):
        super().__init__(scope, construct_id)
        self.image = ecr_assets.DockerImageAsset(
            self, "Image", directory=image_dir, platform=ecr_assets.Platform.LINUX_AMD64
        )
        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"ragline {name} SageMaker model",
        )
        self.image.repository.grant_pull(self.role)
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[
                    f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/*"
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/Endpoints"}},
            )
        )
        if model.model_data_url:
            bucket, _, key = model.model_data_url.removeprefix("s3://").partition("/")
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[f"arn:{Aws.PARTITION}:s3:::{bucket}/{key}"]
                )
            )
        cfn_model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            enable_network_isolation=model.network_isolation,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=self.image.image_uri,
                model_data_url=model.model_data_url,
                environment={
                    **({"MODEL_NAME": model.model_name} if model.model_name else {}),
                    **model.environment,
                },
            ),
        )
        # The role's policy must exist before SageMaker pulls the image.
        cfn_model.node.add_dependency(self.role)
        config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=cfn_model.attr_model_name,
                    initial_instance_count=model.instance_count,
                    instance_type=model.instance_type,
                    initial_variant_weight=1.0,
                )
            ],
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self, "Endpoint", endpoint_config_name=config.attr_endpoint_config_name
        )

    @property
    def endpoint_name(self) -> str:
        return self.endpoint.attr_endpoint_name

    @property
    def endpoint_arn(self) -> str:
        # Ref is the ARN (lower-cased by SageMaker, so never rebuild it from the generated name).
        return self.endpoint.attr_endpoint_arn


class ModelsStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.endpoints: dict[str, ModelEndpoint] = {
            name: ModelEndpoint(
                self,
                pascal(name),
                name=name,
                model=config.models[name],
                image_dir=str(config.model_image_dir(name)),
            )
            for name in MODEL_NAMES
        }

    def grant_invoke(self, model: str, grantee: iam.IGrantable) -> None:
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint"], resources=[self.endpoints[model].endpoint_arn]
            )
        )

    def grant_invoke_stream(self, model: str, grantee: iam.IGrantable) -> None:
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"],
                resources=[self.endpoints[model].endpoint_arn],
            )
        )
