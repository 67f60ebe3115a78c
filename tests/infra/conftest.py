"""Synthesize the CDK app once per session (jsii synthesis takes tens of seconds).

The Lambda code is staged into a temporary directory the way `make package` stages it (a copy of
the sources and the LLM tokenizer cdk.json asks for; the dependencies layer is left empty), the
SageMaker image contexts are stubs (synth hashes them, it never builds them), and everything else
comes from cdk.json. cdk-nag runs in the same synthesis (it adds about two seconds): its findings
fail synthesis, so the fixture keeps the templates and the validation report for tests/infra/test_nag.py
to read instead of failing every test at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Node 20 is end-of-life for jsii: keep its banner out of the test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import pytest  # noqa: E402
from aws_cdk import Stack  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from infra.cdk.app import create_app, enable_nag  # noqa: E402
from infra.cdk.config import MODEL_NAMES, load_config  # noqa: E402
from infra.cdk.nag import Acknowledged  # noqa: E402
from infra.cdk.packaging import configured_llm_tokenizer, ensure_deps_dir, stage_app  # noqa: E402


def policy_statements(templates: Mapping[str, dict], role_id: str, stack: str) -> list[dict]:
    """Every statement of the policies attached to a role: by Ref in its own stack, by import in others."""
    found = []
    for name, template in templates.items():
        for resource in template["Resources"].values():
            if resource["Type"] != "AWS::IAM::Policy":
                continue
            for ref in resource["Properties"].get("Roles", []):
                if (ref == {"Ref": role_id} and name == stack) or (
                    "Fn::ImportValue" in ref and role_id in json.dumps(ref)
                ):
                    found += resource["Properties"]["PolicyDocument"]["Statement"]
    return found


def actions_of(statement: dict) -> set[str]:
    granted = statement["Action"]
    return {granted} if isinstance(granted, str) else set(granted)


@dataclass
class Synthesized:
    outdir: Path
    app_dir: Path  # the staged Lambda code
    stacks: dict[str, Stack]
    templates: dict[str, dict]
    acknowledged: Acknowledged
    validation_report: dict | None  # cdk.out/validation-report.json when validation failed

    def template(self, stack: str) -> Template:
        return Template.from_json(self.templates[stack])

    def resources(self, resource_type: str, stack: str | None = None) -> dict[str, dict]:
        """logical id -> resource, across all stacks unless one is named."""
        found = {}
        for name, template in self.templates.items():
            if stack is None or name == stack:
                found |= {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}
        return found

    def logical_id(self, construct) -> str:
        return Stack.of(construct).get_logical_id(construct.node.default_child)

    def statements(self, role_id: str, stack: str) -> list[dict]:
        """The policy statements of the role `role_id` (a logical id) of `stack`, wherever attached."""
        return policy_statements(self.templates, role_id, stack)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    root = tmp_path_factory.mktemp("cdk")
    app_dir = stage_app(root / "lambda" / "app", llm_tokenizer=configured_llm_tokenizer(root / "cache"))
    ensure_deps_dir(root / "lambda" / "deps")
    for model in MODEL_NAMES:
        (root / "sagemaker" / model).mkdir(parents=True)
        (root / "sagemaker" / model / "Dockerfile").write_text("FROM scratch\n")
    outdir = root / "cdk.out"
    app, stacks = create_app(
        # nag off here: enabled below, to keep what was acknowledged for the tests.
        {"lambdaAssetDir": str(root / "lambda"), "sagemakerDir": str(root / "sagemaker"), "nag": False},
        outdir=str(outdir),
    )
    acknowledged = enable_nag(app, load_config(app))
    report = None
    try:
        app.synth()
    except RuntimeError as error:  # jsii's wrapper of CDK's ValidationFailed
        if "ValidationFailed" not in str(error):
            raise
        report = json.loads((outdir / "validation-report.json").read_text())
    templates = {
        name: json.loads((outdir / stack.template_file).read_text()) for name, stack in stacks.items()
    }
    return Synthesized(
        outdir=outdir,
        app_dir=app_dir,
        stacks=stacks,
        templates=templates,
        acknowledged=acknowledged,
        validation_report=report,
    )
