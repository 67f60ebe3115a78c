"""The CDK context (cdk.json, `-c key=value`) parsed once into one typed model.

Stacks receive a `DeployConfig`; nothing else calls `try_get_context`. Keys are camelCase in
cdk.json (CDK's convention) and snake_case here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from aws_cdk import App, RemovalPolicy
from aws_cdk import aws_logs as logs
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

MODEL_NAMES = ("embedding", "llm")

# CloudWatch Logs accepts only these retention periods (days).
RETENTION_DAYS = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
    60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
    365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS",
    1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}  # fmt: skip


class _Context(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class LayerVersions(_Context):
    # Public layers, pinned: arn:aws:lambda:<region>:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:<n>
    powertools_version: int = 27
    # arn:aws:lambda:<region>:753240598075:layer:LambdaAdapterLayerX86:<n>
    web_adapter_version: int = 25


class OpenSearchConfig(_Context):
    engine_version: str = "2.19"
    instance_type: str = "t3.medium.search"
    instance_count: int = Field(default=1, ge=1)
    volume_size_gib: int = Field(default=20, ge=10, alias="volumeSizeGiB")


class ModelConfig(_Context):
    """One SageMaker endpoint. The images (sagemaker/<model>/) bake a default model in; see their serve.py."""

    model_name: str | None = Field(default=None, description="MODEL_NAME, the model id the endpoint reports")
    instance_type: str
    instance_count: int = Field(default=1, ge=1)
    model_data_url: str | None = Field(
        default=None, pattern=r"^s3://", description="A model.tar.gz on S3 that replaces the baked model"
    )
    network_isolation: bool = Field(default=True, description="The baked models need no network at all")
    environment: dict[str, str] = Field(default={}, description="Container settings, e.g. N_CTX for the LLM")


class ApiConfig(_Context):
    throttle_rate_limit: float = 50
    throttle_burst_limit: int = 100


class DeployConfig(_Context):
    stage: str = Field(default="dev", pattern=r"^[a-z][a-z0-9-]{0,15}$")
    lambda_asset_dir: Path = Path("build/lambda")
    sagemaker_dir: Path = Path("sagemaker")
    log_retention_days: Literal[tuple(RETENTION_DAYS)] = 30  # type: ignore[valid-type]
    removal_policy: Literal["retain", "destroy"] = "retain"
    nag: bool = False
    layers: LayerVersions = LayerVersions()
    opensearch: OpenSearchConfig = OpenSearchConfig()
    models: dict[str, ModelConfig] = {
        "embedding": ModelConfig(
            model_name="sentence-transformers/all-MiniLM-L6-v2", instance_type="ml.m5.large"
        ),
        "llm": ModelConfig(instance_type="ml.g5.xlarge"),
    }
    api: ApiConfig = ApiConfig()

    @property
    def log_retention(self) -> logs.RetentionDays:
        return logs.RetentionDays[RETENTION_DAYS[self.log_retention_days]]

    @property
    def cdk_removal_policy(self) -> RemovalPolicy:
        return RemovalPolicy.RETAIN if self.removal_policy == "retain" else RemovalPolicy.DESTROY

    @property
    def app_code_dir(self) -> Path:
        return self.lambda_asset_dir / "app"

    @property
    def deps_layer_dir(self) -> Path:
        return self.lambda_asset_dir / "deps"

    def model_image_dir(self, model: str) -> Path:
        return self.sagemaker_dir / model

    def check_assets(self) -> None:
        """Fail before synthesis, with the fix, when the staged Lambda code or an image context is missing."""
        missing = [p for p in (self.app_code_dir, self.deps_layer_dir) if not p.is_dir()]
        if missing:
            raise SystemExit(
                f"Lambda assets not found: {', '.join(str(p) for p in missing)}. "
                "Run `make package` (python -m infra.cdk.packaging --deps) first, "
                "or point the `lambdaAssetDir` context key at a staged directory."
            )
        for model in MODEL_NAMES:
            dockerfile = self.model_image_dir(model) / "Dockerfile"
            if not dockerfile.is_file():
                raise SystemExit(f"SageMaker image context has no Dockerfile: {dockerfile}")


def _context(app: App, key: str) -> Any:
    return app.node.try_get_context(key)


def load_config(app: App) -> DeployConfig:
    """Read every key DeployConfig knows from the app's context (unknown keys are CDK's own)."""
    values: dict[str, Any] = {}
    for name, field in DeployConfig.model_fields.items():
        alias = field.alias or name
        value = _context(app, alias)
        if value is not None:
            values[alias] = value
    return DeployConfig.model_validate(values)
