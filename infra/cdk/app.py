"""The CDK app: `cdk synth` / `cdk deploy` (cdk.json runs `python -m infra.cdk.app`).

Stacks, in dependency order (every arrow is a CloudFormation export/import):

    Models ─┐
    Platform ─> Ingest ─> Index ─> Retrieve ─> Context ─> Api
    Platform ─> Notify ─> Api (the subscriptions routes)
                          Index ─> Saga (the document-delete and document-update state machines)
    Api, Saga, Models ─> Ops (dashboard and alarms; infra/cdk/stacks/ops.py)
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Stack, Tags

from infra.cdk import nag
from infra.cdk.config import DeployConfig, load_config
from infra.cdk.constructs.function import RUNTIME
from infra.cdk.nag import Acknowledged
from infra.cdk.stacks.api import ApiStack
from infra.cdk.stacks.context import ContextStack
from infra.cdk.stacks.index import IndexStack
from infra.cdk.stacks.ingest import IngestStack
from infra.cdk.stacks.models import ModelsStack
from infra.cdk.stacks.notify import NotifyStack
from infra.cdk.stacks.ops import OpsStack
from infra.cdk.stacks.platform import KEYLESS_CONTEXTS, PlatformStack
from infra.cdk.stacks.retrieve import RetrieveStack
from infra.cdk.stacks.saga import SagaStack

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = REPO_ROOT / "cdk.json"


def build(app: App, config: DeployConfig, env: Environment | None = None) -> dict[str, Stack]:
    prefix = f"Ragline-{config.stage}"

    def kw(name: str) -> dict[str, Any]:
        return {"stack_name": f"{prefix}-{name}", "env": env, "config": config}

    models = ModelsStack(app, "Models", **kw("Models"))
    platform = PlatformStack(app, "Platform", **kw("Platform"))
    ingest = IngestStack(app, "Ingest", platform=platform, **kw("Ingest"))
    index = IndexStack(app, "Index", platform=platform, ingest=ingest, models=models, **kw("Index"))
    retrieve = RetrieveStack(app, "Retrieve", platform=platform, index=index, models=models, **kw("Retrieve"))
    context = ContextStack(
        app, "Context", platform=platform, retrieve=retrieve, models=models, **kw("Context")
    )
    saga = SagaStack(app, "Saga", ingest=ingest, index=index, **kw("Saga"))
    notify = NotifyStack(app, "Notify", platform=platform, **kw("Notify"))
    functions = {
        **ingest.functions,
        **index.functions,
        **retrieve.functions,
        **context.functions,
        **notify.functions,
    }
    for fn in functions.values():
        if fn.spec.context not in KEYLESS_CONTEXTS:
            platform.grant_key_use(fn.role)
    api = ApiStack(app, "Api", functions=functions, **kw("Api"))
    ops = OpsStack(
        app,
        "Ops",
        platform=platform,
        api=api.api,
        models=models,
        state_machines=saga.state_machines,
        **kw("Ops"),
    )

    stacks: dict[str, Stack] = {
        "Models": models,
        "Platform": platform,
        "Ingest": ingest,
        "Index": index,
        "Retrieve": retrieve,
        "Context": context,
        "Notify": notify,
        "Api": api,
        "Ops": ops,
        "Saga": saga,
    }
    for stack in stacks.values():
        Tags.of(stack).add("project", "ragline")
        Tags.of(stack).add("stage", config.stage)
    return stacks


def enable_nag(app: App, config: DeployConfig) -> Acknowledged:
    """cdk-nag AwsSolutions as a CDK validation plugin (cdk-nag 3): unacknowledged findings fail
    `cdk synth`. Every acknowledgment, with its reason, is in infra/cdk/nag.py."""
    acknowledged = nag.acknowledge_all(
        app, runtime=RUNTIME.name, single_node_search=config.opensearch.instance_count == 1
    )
    nag.add_checks(app)
    return acknowledged


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """cdk.json's context, so that `python -m infra.cdk.app` (no CDK CLI) synthesizes the same app."""
    return json.loads(path.read_text()).get("context", {})


def create_app(
    context: Mapping[str, Any] | None = None, *, outdir: str | None = None
) -> tuple[App, dict[str, Stack]]:
    """`context` overrides cdk.json's; the CDK CLI's own (-c, cdk.context.json) overrides both."""
    app = App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    config = load_config(app)
    config.check_assets()
    stacks = build(app, config)
    if config.nag:
        enable_nag(app, config)
    return app, stacks


def main(argv: list[str] | None = None) -> None:
    """Run by the CDK CLI, or directly: `python -m infra.cdk.app [-c key=value ...]` writes cdk.out/."""
    parser = argparse.ArgumentParser(description="Synthesize the ragline CDK app")
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    context = dict(pair.split("=", 1) for pair in args.context)
    # The CDK CLI sets CDK_OUTDIR; run directly, write where the CLI would.
    app, _ = create_app(context, outdir=None if os.environ.get("CDK_OUTDIR") else str(REPO_ROOT / "cdk.out"))
    app.synth()


if __name__ == "__main__":
    main()
