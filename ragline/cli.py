"""`ragline`: the developer's command line.

ragline dev                 run the whole platform locally (what `make dev` runs)
ragline token --user alice --groups engineering
                            print a bearer token signed by the local identity provider
ragline schemas [--check]   write (or check) the JSON Schemas and the OpenAPI document in docs/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _dev(args: argparse.Namespace) -> int:
    from ragline.local.platform import LocalConfig, run_dev

    return run_dev(
        LocalConfig(
            state_dir=args.state_dir,
            host=args.host,
            port=args.port,
            lambda_port=args.lambda_port,
            moto_port=args.moto_port,
            embedding_port=args.embedding_port,
            llm_port=args.llm_port,
        )
    )


def _token(args: argparse.Namespace) -> int:
    from ragline.local.idp import LocalIdentityProvider

    groups = [g for value in args.groups for g in value.split(",") if g]
    print(LocalIdentityProvider(args.state_dir).issue(args.user, groups, tenant=args.tenant, ttl_s=args.ttl))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from ragline.bulk import run

    groups = [g for g in args.groups.split(",") if g]
    token = args.token
    if not token:  # locally, sign one with the local identity provider
        from ragline.local.idp import LocalIdentityProvider

        token = LocalIdentityProvider(args.state_dir).issue(args.user, groups)
    summary = run(
        args.paths,
        api=args.api,
        token=token,
        allowed_groups=groups,
        collection=args.collection,
        concurrency=args.concurrency,
        manifest_path=args.state_dir / "ingest-manifest.json",
        show_progress=sys.stderr.isatty(),
    )
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0


def _schemas(args: argparse.Namespace) -> int:
    from ragline.apidocs import write_docs

    stale = write_docs(args.out, check=args.check)
    if stale:
        print("out of date (run `ragline schemas`): " + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ragline", description="Ragline developer tools")
    parser.add_argument(
        "--state-dir", type=Path, default=Path(".ragline"), help="local state (keys, index, logs)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the platform locally")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000, help="the API")
    dev.add_argument("--lambda-port", type=int, default=8001, help="the Lambda Invoke emulator")
    dev.add_argument("--moto-port", type=int, default=4566, help="the moto server (S3, SQS, DynamoDB, ...)")
    dev.add_argument("--embedding-port", type=int, default=8081)
    dev.add_argument("--llm-port", type=int, default=8082)
    dev.set_defaults(run=_dev)

    token = commands.add_parser("token", help="issue a local bearer token")
    token.add_argument("--user", required=True)
    token.add_argument("--groups", nargs="*", default=[], help="space- or comma-separated group names")
    token.add_argument("--tenant")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(run=_token)

    ingest = commands.add_parser("ingest", help="upload files and folders through the API")
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument(
        "--groups", required=True, help="groups allowed to see the documents, comma-separated"
    )
    ingest.add_argument("--collection", default="default")
    ingest.add_argument("--api", default=os.environ.get("RAGLINE_API", "http://127.0.0.1:8000"))
    ingest.add_argument("--token", default=os.environ.get("RAGLINE_TOKEN"), help="default: a local token")
    ingest.add_argument("--user", default="ragline-cli", help="the local token's user, when no --token")
    ingest.add_argument("--concurrency", type=int, default=4, help="files in flight at once")
    ingest.set_defaults(run=_ingest)

    schemas = commands.add_parser("schemas", help="export JSON Schemas and OpenAPI to docs/")
    schemas.add_argument("--out", type=Path, default=Path("docs"))
    schemas.add_argument("--check", action="store_true", help="fail if the committed files differ")
    schemas.set_defaults(run=_schemas)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
