"""SageMaker endpoints for the embedding model and the LLM, sized and scaled from the `models` context key.

Each endpoint is real-time on instances (`instanceType`, `instanceCount`, optional target-tracking
`autoscaling` on invocations per instance) or, for the embedding model, serverless (`serverless`: memory
and maximum concurrency; nothing to autoscale). The container is a DockerImageAsset built from
sagemaker/<model>/ at `cdk deploy` (synth only hashes the directory; it needs no docker engine) unless
`imageUri` names an ECR image, e.g. an LMI or TGI container for a large LLM.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.cdk.config import MODEL_NAMES, DeployConfig, ModelConfig
from infra.cdk.naming import pascal

VARIANT = "AllTraffic"
# Application Auto Scaling acts through this service-linked role; CloudFormation creates it if missing.
AUTOSCALING_ROLE = (
    "role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
ECR_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]


class ModelEndpoint(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, name: str, model: ModelConfig, image_dir: str):
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"ragline {name} SageMaker model",
        )
        self.image: ecr_assets.DockerImageAsset | None = None
        if model.image_uri:
            self._grant_pull(model)
        else:
            self.image = ecr_assets.DockerImageAsset(
                self, "Image", directory=image_dir, platform=ecr_assets.Platform.LINUX_AMD64
            )
            self.image.repository.grant_pull(self.role)
        image_uri = model.image_uri or self.image.image_uri
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
                image=image_uri,
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
            production_variants=[self._variant(model, cfn_model.attr_model_name)],
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_config_name=config.attr_endpoint_config_name,
            # A deploy (a new image, say) keeps the instance count autoscaling has reached.
            retain_all_variant_properties=True if model.autoscaling else None,
        )
        self.scalable_target = self._autoscaling(model) if model.autoscaling else None

    def _grant_pull(self, model: ModelConfig) -> None:
        """Let SageMaker pull `imageUri` (an own repository, or an AWS one such as the LMI/TGI images)."""
        parts = model.ecr_image
        repository = (
            f"arn:{Aws.PARTITION}:ecr:{parts['region']}:{parts['account']}:repository/{parts['repository']}"
        )
        self.role.add_to_policy(iam.PolicyStatement(actions=ECR_PULL_ACTIONS, resources=[repository]))
        self.role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))

    def _variant(
        self, model: ModelConfig, model_name: str
    ) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
        if model.serverless:
            return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=VARIANT,
                model_name=model_name,
                serverless_config=sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                    memory_size_in_mb=model.serverless.memory_size_in_mb,
                    max_concurrency=model.serverless.max_concurrency,
                ),
            )
        return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT,
            model_name=model_name,
            initial_instance_count=model.instance_count,
            instance_type=model.instance_type,
            initial_variant_weight=1.0,
            container_startup_health_check_timeout_in_seconds=model.startup_health_check_timeout_seconds,
            model_data_download_timeout_in_seconds=model.model_data_download_timeout_seconds,
        )

    def _autoscaling(self, model: ModelConfig) -> appscaling.ScalableTarget:
        scaling = model.autoscaling
        target = appscaling.ScalableTarget(
            self,
            "ScalableTarget",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
            min_capacity=scaling.min_capacity,
            max_capacity=scaling.max_capacity,
            role=iam.Role.from_role_arn(
                self,
                "AutoscalingRole",
                f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:{AUTOSCALING_ROLE}",
                mutable=False,
            ),
        )
        target.scale_to_track_metric(
            "InvocationsPerInstance",
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            target_value=scaling.target_invocations_per_instance,
            scale_in_cooldown=Duration.seconds(scaling.scale_in_cooldown_seconds),
            scale_out_cooldown=Duration.seconds(scaling.scale_out_cooldown_seconds),
        )
        return target

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
