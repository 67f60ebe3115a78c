"""Deploy model.tar.gz (package.py) as a SageMaker endpoint with the SageMaker Python SDK, without CDK.

    pip install "sagemaker>=3" boto3     # in an environment of its own: see README.md
    python sagemaker/embedding/deploy.py --model-data build/embedding/model.tar.gz --bucket my-bucket \\
        --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/ragline-embedding:latest \\
        --role arn:aws:iam::123456789012:role/ragline-embedding --instance-type ml.g5.xlarge
    python sagemaker/embedding/deploy.py ... --serverless-memory-mb 4096 --serverless-max-concurrency 5
    python sagemaker/embedding/deploy.py ... --dry-run     # print what would be created; no AWS, no SDK

Every run creates a new model and endpoint configuration (timestamped names; SageMaker configurations are
immutable) and then creates the endpoint, or with `--update` points the existing one at the new configuration
(SageMaker swaps instances without downtime). A local tarball is uploaded first, to a key named by its sha256.
The SDK is imported only to deploy, so the plan (`plan()`) and the upload are testable without it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VARIANT = "AllTraffic"
IMAGE_URI = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+([:@].+)?$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass(frozen=True)
class Plan:
    """The SDK calls' arguments, as plain data (snake_case, as sagemaker.core takes them)."""

    model: dict[str, Any]
    endpoint_config: dict[str, Any]
    endpoint: dict[str, Any]
    update: bool


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env takes KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def plan(args: argparse.Namespace, model_data_url: str, stamp: str) -> Plan:
    """What deploy() asks SageMaker for. `stamp` makes the model and configuration names unique."""
    if not IMAGE_URI.match(args.image_uri):
        raise ValueError(
            f"{args.image_uri!r} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/...)"
        )
    if not ROLE_ARN.match(args.role):
        raise ValueError(f"{args.role!r} is not an IAM role ARN")
    serverless = args.serverless_memory_mb is not None
    if serverless == bool(args.instance_type):
        raise ValueError("give either --instance-type (real-time) or --serverless-memory-mb (serverless)")
    versioned = f"{args.name}-{stamp}"
    if not NAME.match(versioned):
        raise ValueError(f"{versioned!r} is not a valid SageMaker name (63 letters, digits, hyphens)")
    environment = {"MODEL_NAME": args.model_name} if args.model_name else {}
    environment.update(parse_env(args.env))
    variant: dict[str, Any] = {"variant_name": VARIANT, "model_name": versioned}
    if serverless:
        variant["serverless_config"] = {
            "memory_size_in_mb": args.serverless_memory_mb,
            "max_concurrency": args.serverless_max_concurrency,
        }
    else:
        variant |= {
            "instance_type": args.instance_type,
            "initial_instance_count": args.instance_count,
            "initial_variant_weight": 1.0,
            "container_startup_health_check_timeout_in_seconds": args.startup_timeout,
        }
    return Plan(
        model={
            "model_name": versioned,
            "execution_role_arn": args.role,
            # The container needs no network (the weights are in the tarball or the image), but serverless
            # endpoints do not support network isolation at all.
            "enable_network_isolation": not (args.network or serverless),
            "primary_container": {
                "image": args.image_uri,
                "model_data_url": model_data_url,
                "environment": environment,
            },
        },
        endpoint_config={"endpoint_config_name": versioned, "production_variants": [variant]},
        endpoint={"endpoint_name": args.name, "endpoint_config_name": versioned},
        update=args.update,
    )


def s3_key(tarball: Path, prefix: str) -> str:
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()[:16]
    return f"{prefix.strip('/')}/{digest}/model.tar.gz".lstrip("/")


def upload(s3: Any, tarball: Path, bucket: str, prefix: str) -> str:
    """The tarball at a key named by its content (an unchanged model is not uploaded twice); its s3:// URL."""
    key = s3_key(tarball, prefix)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
        s3.upload_file(str(tarball), bucket, key)
    return f"s3://{bucket}/{key}"


def deploy(plan: Plan, *, region: str | None, wait: bool) -> None:
    """Create the model, the configuration and the endpoint (or update it) with the SageMaker SDK (v3)."""
    import boto3
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import (
        ContainerDefinition,
        ProductionVariant,
        ProductionVariantServerlessConfig,
    )

    Model.create(
        **{**plan.model, "primary_container": ContainerDefinition(**plan.model["primary_container"])},
        region=region,
    )
    variants = []
    for variant in plan.endpoint_config["production_variants"]:
        if "serverless_config" in variant:
            variant = {
                **variant,
                "serverless_config": ProductionVariantServerlessConfig(**variant["serverless_config"]),
            }
        variants.append(ProductionVariant(**variant))
    EndpointConfig.create(**{**plan.endpoint_config, "production_variants": variants}, region=region)
    if plan.update:
        boto3.client("sagemaker", region_name=region).update_endpoint(
            EndpointName=plan.endpoint["endpoint_name"],
            EndpointConfigName=plan.endpoint["endpoint_config_name"],
        )
        endpoint = Endpoint.get(endpoint_name=plan.endpoint["endpoint_name"], region=region)
    else:
        endpoint = Endpoint.create(**plan.endpoint, region=region)
    if wait:
        endpoint.wait_for_status("InService")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model-data", required=True, help="model.tar.gz: a local file (uploaded) or an s3:// URL"
    )
    p.add_argument("--bucket", help="Where a local --model-data is uploaded")
    p.add_argument("--prefix", default="ragline/embedding", help="Key prefix for the upload")
    p.add_argument(
        "--image-uri", required=True, help="The image built from sagemaker/embedding/Dockerfile, in ECR"
    )
    p.add_argument(
        "--role", required=True, help="The SageMaker execution role (ECR pull, S3 read of the tarball)"
    )
    p.add_argument("--name", default="ragline-embedding", help="The endpoint's name (the client's endpoint)")
    p.add_argument("--model-name", help="MODEL_NAME: what responses report (default: the tarball's model id)")
    p.add_argument("--instance-type", help="Real-time endpoint on instances, e.g. ml.g5.xlarge")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--startup-timeout", type=int, default=600, help="Seconds to load the model before /ping")
    p.add_argument(
        "--serverless-memory-mb", type=int, help="Serverless endpoint: 1024 to 6144, in 1024 steps"
    )
    p.add_argument("--serverless-max-concurrency", type=int, default=5)
    p.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="Container setting (repeat)"
    )
    p.add_argument("--network", action="store_true", help="Allow network access (a hub MODEL_ID needs it)")
    p.add_argument(
        "--update", action="store_true", help="The endpoint exists: move it to the new configuration"
    )
    p.add_argument("--region")
    p.add_argument("--no-wait", action="store_true", help="Return before the endpoint is InService")
    p.add_argument("--dry-run", action="store_true", help="Print the plan; touch nothing")
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    local = not args.model_data.startswith("s3://")
    if local and not args.bucket:
        p.error("a local --model-data needs --bucket")
    tarball = Path(args.model_data)
    url = f"s3://{args.bucket}/{s3_key(tarball, args.prefix)}" if local else args.model_data
    try:
        deployment = plan(args, url, time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    except ValueError as exc:
        p.error(str(exc))
    if args.dry_run:
        print(json.dumps({"upload": str(tarball) if local else None, **asdict(deployment)}, indent=2))
        return
    if local:
        import boto3

        upload(boto3.client("s3", region_name=args.region), tarball, args.bucket, args.prefix)
    deploy(deployment, region=args.region, wait=not args.no_wait)
    print(
        f"endpoint {args.name}: {'updated' if args.update else 'created'} ({deployment.model['model_name']})"
    )


if __name__ == "__main__":
    main()
