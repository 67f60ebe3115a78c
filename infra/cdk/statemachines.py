"""Export the state machines the CDK app defines, for the local platform:
`python -m infra.cdk.statemachines [--check]` writes docs/statemachines/<name>.asl.json.

Each file is the definition CloudFormation would deploy, resolved for the local platform by
`ragline.local.stepfunctions.local_definition` (Lambda ARNs → the local functions named by their
`ragline:function` tags, across stacks). `ragline dev` creates its state machines from these files
(ragline must not import aws_cdk), and tests/infra/test_saga_stack.py fails when a file differs
from what the app synthesizes now.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragline.local.stepfunctions import local_definition, state_machines

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPORT_DIR = REPO_ROOT / "docs" / "statemachines"


def export_path(name: str, directory: Path = EXPORT_DIR) -> Path:
    return directory / f"{name}.asl.json"


def exported_definitions(templates: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Topology name → the file's text, for every tagged state machine of the app's templates."""
    exported: dict[str, str] = {}
    every = list(templates.values())
    for template in every:
        for name, logical_id in state_machines(template).items():
            definition = json.loads(local_definition(template, logical_id, imports=every))
            exported[name] = json.dumps(definition, indent=2) + "\n"
    return exported


def synthesized_templates(workdir: Path) -> dict[str, dict[str, Any]]:
    """The app synthesized the way tests/infra synthesizes it: code staged, image contexts stubbed."""
    from infra.cdk.app import create_app
    from infra.cdk.config import MODEL_NAMES
    from infra.cdk.packaging import configured_llm_tokenizer, ensure_deps_dir, stage_app

    stage_app(workdir / "lambda" / "app", llm_tokenizer=configured_llm_tokenizer(workdir / "cache"))
    ensure_deps_dir(workdir / "lambda" / "deps")
    for model in MODEL_NAMES:
        (workdir / "sagemaker" / model).mkdir(parents=True)
        (workdir / "sagemaker" / model / "Dockerfile").write_text("FROM scratch\n")
    app, stacks = create_app(
        {"lambdaAssetDir": str(workdir / "lambda"), "sagemakerDir": str(workdir / "sagemaker")},
        outdir=str(workdir / "cdk.out"),
    )
    assembly = app.synth()
    return {
        name: json.loads(Path(assembly.get_stack_by_name(stack.stack_name).template_full_path).read_text())
        for name, stack in stacks.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cdk.statemachines", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        exported = exported_definitions(synthesized_templates(Path(workdir)))
    stale = [
        name
        for name, text in exported.items()
        if not export_path(name).is_file() or export_path(name).read_text() != text
    ]
    if args.check:
        if stale:
            print(
                "out of date (run `python -m infra.cdk.statemachines`): " + ", ".join(stale), file=sys.stderr
            )
        return 1 if stale else 0
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in exported.items():
        export_path(name).write_text(text)
        print(f"wrote {export_path(name).relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
