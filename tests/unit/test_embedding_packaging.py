"""package.py (model.tar.gz) and deploy.py (the SageMaker SDK calls) without AWS: the tarball's layout and
what serve.py makes of it, and the deployment plan checked against SageMaker's own API model (botocore's),
the upload against moto. The SDK calls themselves need AWS and are not run here."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import boto3
import botocore.session
import pytest
from botocore.validate import ParamValidator
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "sagemaker" / "embedding"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ragline-embedding:1"
ROLE = "arn:aws:iam::123456789012:role/ragline-embedding"


def load(name: str) -> ModuleType:
    """The scripts are standalone (sagemaker/ is not a package): loaded from their paths."""
    spec = importlib.util.spec_from_file_location(f"embedding_{name}", SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


package, deploy, serve = load("package"), load("deploy"), load("serve")


def members(tarball: Path) -> dict[str, bytes]:
    with tarfile.open(tarball) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A sentence-transformers directory's shape (the server is not started on it)."""
    folder = tmp_path / "weights"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text("[]")
    (folder / "config.json").write_text("{}")
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    return folder


def test_a_reference_tarball_holds_the_code_and_names_the_model(tmp_path: Path) -> None:
    tarball = tmp_path / "model.tar.gz"
    package.build(tarball, model_id="org/model", weights_dir=None, manifest_name=serve.MANIFEST)

    files = members(tarball)
    assert set(files) == {"code/serve.py", "code/requirements.txt", serve.MANIFEST}
    assert files["code/serve.py"] == (SCRIPTS / "serve.py").read_bytes()
    assert files["code/requirements.txt"] == (SCRIPTS / "requirements.txt").read_bytes()
    assert json.loads(files[serve.MANIFEST]) == {"model_id": "org/model", "weights": "reference"}


def test_included_weights_sit_at_the_root_with_their_digests(tmp_path: Path, weights: Path) -> None:
    tarball = tmp_path / "model.tar.gz"
    package.build(tarball, model_id="org/model", weights_dir=weights, manifest_name=serve.MANIFEST)

    files = members(tarball)
    weight_files = {str(p.relative_to(weights)): p.read_bytes() for p in weights.rglob("*") if p.is_file()}
    assert {k: files[k] for k in weight_files} == weight_files
    described = json.loads(files[serve.MANIFEST])
    assert described["files"] == {k: hashlib.sha256(v).hexdigest() for k, v in weight_files.items()}


def test_what_sagemaker_unpacks_is_what_the_server_loads(tmp_path: Path, weights: Path) -> None:
    tarball = tmp_path / "model.tar.gz"
    package.build(tarball, model_id="org/model", weights_dir=weights, manifest_name=serve.MANIFEST)
    opt_ml_model = tmp_path / "opt-ml-model"
    with tarfile.open(tarball) as tar:
        tar.extractall(opt_ml_model, filter="data")

    assert serve.resolve_model({}, opt_ml_model) == serve.ModelSource(str(opt_ml_model), "org/model")


def test_builds_are_reproducible(tmp_path: Path, weights: Path) -> None:
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    for output in (first, second):
        package.build(output, model_id="org/model", weights_dir=weights, manifest_name=serve.MANIFEST)
    assert first.read_bytes() == second.read_bytes()


def test_the_packaging_command(tmp_path: Path) -> None:
    output = tmp_path / "out" / "model.tar.gz"
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "package.py"), "--output", str(output)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(run.stdout)
    assert report["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert json.loads(members(output)[serve.MANIFEST])["model_id"] == serve.BUNDLED_MODEL_NAME


# --------------------------------------------------------------------------------------------
# deploy.py
# --------------------------------------------------------------------------------------------


def args(*extra: str) -> argparse.Namespace:
    base = ["--model-data", "s3://b/k/model.tar.gz", "--image-uri", IMAGE, "--role", ROLE]
    return deploy.parser().parse_args([*base, *extra])


def pascal(value: object) -> object:
    """snake_case (the SDK's names) to the API's PascalCase, so botocore's model can check the plan."""
    if isinstance(value, dict):
        return {
            "".join("MB" if part == "mb" else part.capitalize() for part in key.split("_")): pascal(v)
            for key, v in value.items()
        }
    if isinstance(value, list):
        return [pascal(v) for v in value]
    return value


def assert_valid(operation: str, params: dict[str, object]) -> None:
    shape = (
        botocore.session.get_session().get_service_model("sagemaker").operation_model(operation).input_shape
    )
    report = ParamValidator().validate(pascal(params), shape)
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize(
    "extra",
    [
        ["--instance-type", "ml.g5.xlarge", "--instance-count", "2", "--env", "BATCH_TOKEN_BUDGET=32768"],
        ["--serverless-memory-mb", "4096", "--serverless-max-concurrency", "3"],
    ],
)
def test_the_plan_is_valid_sagemaker_api_input(extra: list[str]) -> None:
    planned = deploy.plan(
        args(*extra, "--model-name", "org/model"), "s3://b/k/model.tar.gz", "20250101-000000"
    )

    assert_valid("CreateModel", planned.model)
    assert_valid("CreateEndpointConfig", planned.endpoint_config)
    assert_valid("CreateEndpoint", planned.endpoint)
    container = planned.model["primary_container"]
    assert (container["image"], container["model_data_url"]) == (IMAGE, "s3://b/k/model.tar.gz")
    assert container["environment"]["MODEL_NAME"] == "org/model"
    (variant,) = planned.endpoint_config["production_variants"]
    assert variant["model_name"] == planned.model["model_name"] == planned.endpoint["endpoint_config_name"]
    assert planned.endpoint["endpoint_name"] == "ragline-embedding"


def test_real_time_endpoints_are_network_isolated_and_serverless_ones_cannot_be() -> None:
    real_time = deploy.plan(args("--instance-type", "ml.c7i.xlarge"), "s3://b/k", "1")
    serverless = deploy.plan(args("--serverless-memory-mb", "2048"), "s3://b/k", "1")
    networked = deploy.plan(args("--instance-type", "ml.c7i.xlarge", "--network"), "s3://b/k", "1")

    assert real_time.model["enable_network_isolation"] is True
    assert serverless.model["enable_network_isolation"] is False
    assert networked.model["enable_network_isolation"] is False
    assert real_time.endpoint_config["production_variants"][0]["initial_instance_count"] == 1
    assert "instance_type" not in serverless.endpoint_config["production_variants"][0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "either --instance-type"),
        (["--instance-type", "ml.g5.xlarge", "--serverless-memory-mb", "2048"], "either --instance-type"),
        (["--instance-type", "ml.g5.xlarge", "--name", "no_underscores"], "not a valid SageMaker name"),
        (["--instance-type", "ml.g5.xlarge", "--env", "NOEQUALS"], "KEY=VALUE"),
    ],
)
def test_plans_that_sagemaker_would_refuse_are_refused_here(extra: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deploy.plan(args(*extra), "s3://b/k", "1")


def test_a_plan_needs_an_ecr_image_and_a_role() -> None:
    with pytest.raises(ValueError, match="ECR image"):
        deploy.plan(
            deploy.parser().parse_args(["--model-data", "x", "--image-uri", "nginx:latest", "--role", ROLE]),
            "s3://b/k",
            "1",
        )
    with pytest.raises(ValueError, match="IAM role"):
        deploy.plan(
            deploy.parser().parse_args(["--model-data", "x", "--image-uri", IMAGE, "--role", "admin"]),
            "s3://b/k",
            "1",
        )


def test_the_upload_is_named_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(variable, "testing")
    tarball = tmp_path / "model.tar.gz"
    tarball.write_bytes(b"model bytes")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="models")

        url = deploy.upload(s3, tarball, "models", "ragline/embedding")
        again = deploy.upload(s3, tarball, "models", "ragline/embedding")
        tarball.write_bytes(b"other model bytes")
        changed = deploy.upload(s3, tarball, "models", "ragline/embedding")

        key = url.removeprefix("s3://models/")
        assert s3.get_object(Bucket="models", Key=key)["Body"].read() == b"model bytes"
    assert url == again != changed
    assert key.startswith("ragline/embedding/") and key.endswith("/model.tar.gz")


def test_a_dry_run_prints_the_plan_without_the_sdk(tmp_path: Path) -> None:
    tarball = tmp_path / "model.tar.gz"
    tarball.write_bytes(b"model bytes")
    command = [sys.executable, str(SCRIPTS / "deploy.py"), "--model-data", str(tarball), "--bucket", "models"]
    command += ["--image-uri", IMAGE, "--role", ROLE, "--instance-type", "ml.g5.xlarge", "--dry-run"]

    printed = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)

    assert printed["upload"] == str(tarball)
    assert (
        printed["model"]["primary_container"]["model_data_url"]
        == f"s3://models/{deploy.s3_key(tarball, 'ragline/embedding')}"
    )
    assert printed["update"] is False
