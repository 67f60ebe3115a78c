"""The CDK context (cdk.json, `-c key=value`) parsed once into one typed model.

Stacks receive a `DeployConfig`; nothing else calls `try_get_context`. Keys are camelCase in
cdk.json (CDK's convention) and snake_case here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from aws_cdk import App, RemovalPolicy
from aws_cdk import aws_logs as logs
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra.cdk.packaging import BUNDLED_TOKENIZER, LLM_TOKENIZER_FILE, REPO_ROOT
from ragline.contracts import FilterableFieldType, GroupName
from ragline.scopes import PeopleScopes, Scope
from ragline.settings import Settings
from ragline.tiers import DEFAULT_TIERS, Tier, tiers_from_context
from ragline.topology import SCOPES

_DEFAULTS = Settings.model_construct()  # field defaults only: nothing read from the environment

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


class KnnConfig(_Context):
    """The k-NN field's HNSW graph (reasons for the defaults: ragline/search/opensearch.py)."""

    engine: Literal["faiss", "lucene"] = _DEFAULTS.knn_engine
    space_type: Literal["innerproduct", "cosinesimil"] = _DEFAULTS.knn_space_type
    m: int = Field(default=_DEFAULTS.knn_m, ge=2, le=100)
    ef_construction: int = Field(default=_DEFAULTS.knn_ef_construction, ge=2)
    ef_search: int = Field(default=_DEFAULTS.knn_ef_search, ge=2)


class SearchConfig(_Context):
    """Search behaviour every function that reads or writes the index must agree on."""

    metadata_fields: dict[str, FilterableFieldType] = Field(
        default={}, description="Filterable metadata fields and their types (ragline/search/fields.py)"
    )
    # Defaults are ragline.settings' own, so a deployment and `make dev` search alike.
    title_boost: float = Field(default=_DEFAULTS.title_boost, ge=0)
    heading_boost: float = Field(default=_DEFAULTS.heading_boost, ge=0)
    fusion: Literal["rrf", "convex"] = _DEFAULTS.hybrid_fusion
    rrf_k: int = Field(default=_DEFAULTS.rrf_k, ge=1)
    keyword_weight: float = Field(default=_DEFAULTS.hybrid_keyword_weight, ge=0)
    vector_weight: float = Field(default=_DEFAULTS.hybrid_vector_weight, ge=0)
    knn: KnnConfig = KnnConfig()

    def settings(self) -> dict[str, str]:
        """As ragline.settings fields (values as their environment variables spell them)."""
        return {
            "metadata_fields": json.dumps({name: str(kind) for name, kind in self.metadata_fields.items()}),
            "title_boost": str(self.title_boost),
            "heading_boost": str(self.heading_boost),
            "hybrid_fusion": self.fusion,
            "rrf_k": str(self.rrf_k),
            "hybrid_keyword_weight": str(self.keyword_weight),
            "hybrid_vector_weight": str(self.vector_weight),
            "knn_engine": self.knn.engine,
            "knn_space_type": self.knn.space_type,
            "knn_m": str(self.knn.m),
            "knn_ef_construction": str(self.knn.ef_construction),
            "knn_ef_search": str(self.knn.ef_search),
        }


class AutoscalingConfig(_Context):
    """Target tracking on SageMakerVariantInvocationsPerInstance (Application Auto Scaling)."""

    min_capacity: int = Field(ge=1, description="Instances kept at low traffic (real-time endpoints need 1)")
    max_capacity: int = Field(ge=1, description="The cost ceiling")
    target_invocations_per_instance: float = Field(
        gt=0, description="Invocations per instance per minute the policy holds the variant at"
    )
    scale_in_cooldown_seconds: int = Field(default=300, ge=0)
    scale_out_cooldown_seconds: int = Field(default=60, ge=0)

    @model_validator(mode="after")
    def _min_within_max(self) -> AutoscalingConfig:
        if self.min_capacity > self.max_capacity:
            raise ValueError(
                f"minCapacity ({self.min_capacity}) is greater than maxCapacity ({self.max_capacity})"
            )
        return self


class ServerlessConfig(_Context):
    """SageMaker Serverless Inference: CPU only, scales to zero, cold starts; no instances to scale."""

    memory_size_in_mb: Literal[1024, 2048, 3072, 4096, 5120, 6144] = Field(alias="memorySizeInMB")
    max_concurrency: int = Field(ge=1, le=200)


# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>(:<tag>|@sha256:<digest>)
ECR_IMAGE_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)(?::[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$"
)

# Production variant settings that only instance-backed (real-time) endpoints have.
REAL_TIME_ONLY = (
    "instance_type",
    "instance_count",
    "autoscaling",
    "startup_health_check_timeout_seconds",
    "model_data_download_timeout_seconds",
)


class ModelConfig(_Context):
    """One SageMaker endpoint: real-time on instances (optionally autoscaled), or serverless.

    The images (sagemaker/<model>/) bake a default model in (see their serve.py); `imageUri` replaces
    the image, `modelDataUrl` the model."""

    model_name: str | None = Field(default=None, description="MODEL_NAME, the model id the endpoint reports")
    instance_type: str | None = Field(
        default=None, pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$", description="e.g. ml.g5.xlarge"
    )
    instance_count: int = Field(
        default=1, ge=1, description="Initial count (with autoscaling: within min..max)"
    )
    autoscaling: AutoscalingConfig | None = None
    serverless: ServerlessConfig | None = Field(
        default=None, description="Serverless inference, not instances"
    )
    image_uri: str | None = Field(
        default=None, description="An ECR image (e.g. an LMI or TGI container) instead of sagemaker/<model>/"
    )
    model_data_url: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+",
        description="A model.tar.gz on S3 (s3://bucket/key) that replaces the baked model",
    )
    network_isolation: bool = Field(default=True, description="The baked models need no network at all")
    environment: dict[str, str] = Field(default={}, description="Container settings, e.g. N_CTX for the LLM")
    startup_health_check_timeout_seconds: int | None = Field(
        default=None, ge=60, le=3600, description="Time a large model may take to load before /ping"
    )
    model_data_download_timeout_seconds: int | None = Field(default=None, ge=60, le=3600)
    # The LLM only (the embedding tokenizer ships with its model package): how the context function
    # counts the prompt it packs. Unset, both follow from the served model (DeployConfig.llm_*).
    tokenizer: str | None = Field(
        default=None,
        description=f"llm: {BUNDLED_TOKENIZER!r} (extracted from the bundled GGUF at packaging), a "
        "tokenizer.json path relative to the repository, or null (sizes estimated from characters)",
    )
    context_window_tokens: int | None = Field(
        default=None, ge=256, description="llm: the served model's context window, in tokens"
    )

    @field_validator("image_uri")
    @classmethod
    def _ecr_image(cls, value: str | None) -> str | None:
        if value is not None and not ECR_IMAGE_URI.match(value):
            raise ValueError(
                f"{value!r} is not an ECR image URI: "
                "<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag> (or @sha256:<digest>)"
            )
        return value

    @model_validator(mode="after")
    def _real_time_or_serverless(self) -> ModelConfig:
        if self.serverless is not None:
            conflicting = [to_camel(name) for name in REAL_TIME_ONLY if name in self.model_fields_set]
            if conflicting:
                raise ValueError(
                    f"serverless endpoints have no instances: remove {', '.join(conflicting)} "
                    "(or remove serverless)"
                )
            if self.network_isolation:
                raise ValueError(
                    "serverless inference does not support network isolation: set networkIsolation to false"
                )
            return self
        if self.instance_type is None:
            raise ValueError("instanceType is required for a real-time endpoint (or configure serverless)")
        scaling = self.autoscaling
        if scaling and not scaling.min_capacity <= self.instance_count <= scaling.max_capacity:
            raise ValueError(
                f"instanceCount ({self.instance_count}) is outside autoscaling "
                f"minCapacity..maxCapacity ({scaling.min_capacity}..{scaling.max_capacity})"
            )
        return self

    @property
    def ecr_image(self) -> re.Match[str] | None:
        """The parts of `image_uri` (account, region, repository), or None for the built image."""
        return ECR_IMAGE_URI.match(self.image_uri) if self.image_uri else None

    @property
    def serves_bundled_model(self) -> bool:
        """Whether the endpoint serves the model baked into sagemaker/<model>/ (see its serve.py)."""
        return not (self.image_uri or self.model_data_url or "MODEL_PATH" in self.environment)


MachineClientName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]


class MachineClientConfig(_Context):
    """A client-credentials app client (`api.machineClients.<name>`): the scopes it may ask for, and
    the groups and tenant its access tokens carry (added by infra/cdk/triggers/pre_token.py)."""

    scopes: tuple[Scope, ...] = Field(default=SCOPES, min_length=1)
    # What a document's allowed_groups may name; no whitespace, so they travel space-separated in
    # one claim (ragline.identity.MACHINE_GROUPS_CLAIM).
    groups: tuple[GroupName, ...] = ()
    tenant: str | None = Field(default=None, min_length=1, max_length=256)


class ApiConfig(_Context):
    # The stage's ceiling for all callers together; each API key's usage plan (apiTiers) limits one caller.
    throttle_rate_limit: float = 200
    throttle_burst_limit: int = 400
    user_pool_id: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2}-[a-z]+-\d_[0-9A-Za-z]+$",
        description="An existing Cognito user pool (its id) instead of creating one",
    )
    auth_domain_prefix: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
        description="The Cognito domain (token endpoint) prefix; default ragline-<stage>-<account>",
    )
    waf_rate_limit: int = Field(
        default=2000, ge=10, description="Requests per client IP per 5 minutes before WAF blocks it"
    )
    waf_body_limit_kib: Literal[8, 16, 32, 48, 64] = Field(
        default=16, description="Largest request body outside /v1/documents (WAF inspects this much)"
    )
    people_scopes: PeopleScopes = Field(
        default_factory=PeopleScopes, description="The scopes people's tokens carry (ragline.scopes)"
    )
    # Without groups a machine can write and start work but sees no document (ragline.identity.can_see).
    machine_clients: dict[MachineClientName, MachineClientConfig] = Field(
        default_factory=lambda: {"default": MachineClientConfig()}
    )


class NotifyConfig(_Context):
    """notify's email: the SES identity (an address) emails come from; null: no identity is made and
    email subscriptions fail their deliveries (webhooks are unaffected)."""

    email_sender: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class OpsConfig(_Context):
    """Alarm thresholds (stacks/ops.py; what each means and what to do: docs/runbook.md)."""

    api_5xx_rate_percent: float = Field(
        default=1.0, gt=0, le=100, alias="api5xxRatePercent", description="5xx share of requests"
    )
    api_p99_latency_ms: int = Field(
        default=10_000, ge=100, description="p99 API latency (streamed answers count until their last byte)"
    )


class DeployConfig(_Context):
    stage: str = Field(default="dev", pattern=r"^[a-z][a-z0-9-]{0,15}$")
    lambda_asset_dir: Path = Path("build/lambda")
    sagemaker_dir: Path = Path("sagemaker")
    log_retention_days: Literal[tuple(RETENTION_DAYS)] = 30  # type: ignore[valid-type]
    removal_policy: Literal["retain", "destroy"] = "retain"
    nag: bool = False
    layers: LayerVersions = LayerVersions()
    opensearch: OpenSearchConfig = OpenSearchConfig()
    search: SearchConfig = SearchConfig()
    models: dict[str, ModelConfig] = {
        "embedding": ModelConfig(
            model_name="sentence-transformers/all-MiniLM-L6-v2", instance_type="ml.m5.large"
        ),
        "llm": ModelConfig(instance_type="ml.g5.xlarge"),
    }
    api: ApiConfig = ApiConfig()
    api_tiers: dict[str, Tier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    ops: OpsConfig = OpsConfig()
    notify: NotifyConfig = NotifyConfig()

    @field_validator("api_tiers", mode="before")
    @classmethod
    def _tiers(cls, value: Any) -> dict[str, Tier]:
        return value if _all_tiers(value) else tiers_from_context(value)

    @model_validator(mode="after")
    def _stage_throttle_above_tiers(self) -> DeployConfig:
        # API Gateway applies the stricter of the stage's and the key's limits: a stage ceiling below
        # a tier would sell that tier a rate it cannot get.
        for tier in self.api_tiers.values():
            if (
                tier.rate_per_second > self.api.throttle_rate_limit
                or tier.burst > self.api.throttle_burst_limit
            ):
                raise ValueError(
                    f"apiTiers.{tier.name} ({tier.rate_per_second}/s, burst {tier.burst}) exceeds the stage "
                    f"throttle api.throttleRateLimit/throttleBurstLimit ({self.api.throttle_rate_limit}/s, "
                    f"burst {self.api.throttle_burst_limit})"
                )
        return self

    @field_validator("models")
    @classmethod
    def _both_models(cls, models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        if set(models) != set(MODEL_NAMES):
            raise ValueError(
                f"configure exactly the models {', '.join(MODEL_NAMES)}; got {', '.join(models)}"
            )
        if models["llm"].serverless is not None:
            # No GPUs on serverless, and the context function streams from a real-time endpoint.
            raise ValueError("the llm endpoint must be real-time: serverless is for the embedding endpoint")
        llm_only = [
            to_camel(f)
            for f in ("tokenizer", "context_window_tokens")
            if f in models["embedding"].model_fields_set
        ]
        if llm_only:
            raise ValueError(
                f"{', '.join(llm_only)}: llm settings (the embedding tokenizer ships with its model package)"
            )
        llm = models["llm"]
        if llm.tokenizer == BUNDLED_TOKENIZER and not llm.serves_bundled_model:
            # A tokenizer of another model would pack prompts in the wrong tokens, silently.
            raise ValueError(
                f"llm.tokenizer is {BUNDLED_TOKENIZER!r} but the endpoint serves another model (imageUri, "
                "modelDataUrl or MODEL_PATH): give that model's tokenizer.json (`ragline llm-tokenizer "
                "GGUF OUT` makes one from a GGUF) or null"
            )
        if llm.tokenizer not in (None, BUNDLED_TOKENIZER) and not (REPO_ROOT / llm.tokenizer).is_file():
            raise ValueError(f"llm.tokenizer: {REPO_ROOT / llm.tokenizer} is not a file")
        n_ctx = llm.environment.get("N_CTX")
        if llm.context_window_tokens and n_ctx and n_ctx.isdigit() and llm.context_window_tokens > int(n_ctx):
            raise ValueError(
                f"llm.contextWindowTokens ({llm.context_window_tokens}) exceeds the server's N_CTX ({n_ctx}): "
                "prompts would not fit"
            )
        return models

    @property
    def llm_tokenizer(self) -> str | None:
        """`models.llm.tokenizer`; unset, the bundled model's own when the endpoint serves it, else None."""
        llm = self.models["llm"]
        if "tokenizer" in llm.model_fields_set:
            return llm.tokenizer
        return BUNDLED_TOKENIZER if llm.serves_bundled_model else None

    @property
    def llm_context_window_tokens(self) -> int:
        """`models.llm.contextWindowTokens`; unset, the llama.cpp server's N_CTX, else the settings' default."""
        llm = self.models["llm"]
        if llm.context_window_tokens is not None:
            return llm.context_window_tokens
        n_ctx = llm.environment.get("N_CTX", "")
        return int(n_ctx) if n_ctx.isdigit() else _DEFAULTS.context_window_tokens

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
        for model in (name for name in MODEL_NAMES if not self.models[name].image_uri):
            dockerfile = self.model_image_dir(model) / "Dockerfile"
            if not dockerfile.is_file():
                raise SystemExit(f"SageMaker image context has no Dockerfile: {dockerfile}")
        if self.llm_tokenizer is not None:
            staged = self.app_code_dir / LLM_TOKENIZER_FILE
            configured = None if self.llm_tokenizer == BUNDLED_TOKENIZER else REPO_ROOT / self.llm_tokenizer
            if not staged.is_file() or (configured and staged.read_bytes() != configured.read_bytes()):
                raise SystemExit(
                    f"{staged} is missing or is not models.llm.tokenizer ({self.llm_tokenizer}): run "
                    "`make package` (python -m infra.cdk.packaging) after changing it"
                )


def _all_tiers(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(t, Tier) for t in value.values())


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
