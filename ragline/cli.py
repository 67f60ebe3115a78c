"""`ragline`: the developer's command line.

ragline dev                 run the whole platform locally (what `make dev` runs)
ragline token --user alice --groups engineering [--scopes search answers]
                            print a bearer token signed by the local identity provider
ragline client --name reporter --scopes search
                            register a machine client (client credentials at POST /oauth2/token)
ragline api-key --tier pro  print a new local API key (x-api-key) bound to a tier of cdk.json
ragline schemas [--check]   write (or check) the JSON Schemas and the OpenAPI document in docs/
ragline reconcile [--dry-run] [--aws --function F]
                            compare the documents table with the index; repair orphans and phantoms
ragline dlq list | redrive QUEUE [--limit N] [--aws --stage S]
                            dead-letter queue depths; move a DLQ's messages back to its queue
ragline reindex             rebuild the search index the settings pick from its current settings
                            (declared filterable fields, HNSW parameters) while it keeps serving
ragline llm-tokenizer GGUF OUT
                            write a GGUF model's tokenizer as tokenizer.json (RAGLINE_LLM_TOKENIZER,
                            models.llm.tokenizer in cdk.json)
ragline eval beir DIR [--split dev] [--queries N] [--corpus-sample N] [--state-dir DIR] [--json PATH]
                            nDCG@10, recall@10/100 and MRR of each search mode on a BEIR dataset,
                            ingested and queried through the API of a local platform (or --url)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


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
            require_api_key=args.require_api_key,
        )
    )


def _names(values: list[str] | None) -> list[str] | None:
    """Space- or comma-separated names (None: none given)."""
    return None if values is None else [n for value in values for n in value.split(",") if n]


def _token(args: argparse.Namespace) -> int:
    from ragline.local.idp import InvalidScope, LocalIdentityProvider

    idp = LocalIdentityProvider(args.state_dir)
    try:
        token = idp.issue(
            args.user, _names(args.groups), tenant=args.tenant, ttl_s=args.ttl, scopes=_names(args.scopes)
        )
    except InvalidScope as exc:
        print(exc, file=sys.stderr)
        return 2
    print(token)
    return 0


def _client(args: argparse.Namespace) -> int:
    from ragline.local.idp import InvalidScope, LocalIdentityProvider

    try:
        client_id, secret = LocalIdentityProvider(args.state_dir).register_client(
            args.name, _names(args.scopes), groups=_names(args.groups), tenant=args.tenant
        )
    except InvalidScope as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"client_id={client_id}\nclient_secret={secret}")
    return 0


def _api_key(args: argparse.Namespace) -> int:
    from ragline.local.usage import ApiKeys, UnknownTier

    try:
        print(ApiKeys(args.state_dir).create(args.tier, name=args.name))
    except UnknownTier as exc:
        print(exc, file=sys.stderr)
        return 2
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
        api_key=args.api_key,
        allowed_groups=groups,
        collection=args.collection,
        concurrency=args.concurrency,
        manifest_path=args.state_dir / "ingest-manifest.json",
        show_progress=sys.stderr.isatty(),
    )
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0


def _eval_beir(args: argparse.Namespace) -> int:
    import json

    import httpx

    from ragline.evaluation.client import ApiError, print_progress
    from ragline.evaluation.runner import MODES, IngestFailed, Options, dataset_for, run_beir

    modes = tuple(m for m in args.modes.split(",") if m)
    if unknown := [m for m in modes if m not in MODES]:
        print(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}", file=sys.stderr)
        return 2
    given = {"k": args.fusion_k, "keyword_weight": args.keyword_weight, "vector_weight": args.vector_weight}
    options = Options(
        folder=args.dir,
        split=args.split,
        queries=args.queries,
        corpus_sample=args.corpus_sample,
        seed=args.seed,
        modes=modes,
        fusion={name: value for name, value in given.items() if value is not None},
        collection=args.collection,
        groups=tuple(g for g in args.groups.split(",") if g),
        concurrency=args.concurrency,
        # With --url, a token is signed by the local identity provider of the global --state-dir.
        state_dir=args.eval_state_dir or (args.state_dir if args.url else None),
        url=args.url,
        token=args.token,
        api_key=args.api_key,
    )
    try:
        dataset = dataset_for(options)
        if not args.url:
            where = options.state_dir or "a temporary directory"
            print(f"starting a local platform (state in {where})", file=sys.stderr, flush=True)
        report = run_beir(options, dataset, progress=print_progress())
    # ValueError: a malformed dataset; HTTPError: the gateway could not be reached (--url).
    except (ApiError, IngestFailed, FileNotFoundError, ValueError, httpx.HTTPError) as exc:
        print(f"evaluation failed: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1))
    return 0


def _reindex(args: argparse.Namespace) -> int:
    import json

    from ragline.search.factory import search_index
    from ragline.settings import get_settings

    settings = get_settings()
    if "RAGLINE_SEARCH_BACKEND" not in os.environ:
        # On a laptop: the index of the local platform under --state-dir (a deployment sets the backend).
        settings = settings.model_copy(
            update={"search_backend": "lance", "lance_path": str(args.state_dir / "index")}
        )
    index = search_index(settings)
    summary = index.reindex(progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


def _boto3_client(service: str, local_url: str | None, **kwargs: Any) -> Any:
    """A boto3 client: for AWS with your credentials and region, or for the local platform's
    endpoint `local_url` (which accepts any credentials)."""
    import boto3

    if local_url is None:
        return boto3.client(service, **kwargs)
    return boto3.client(
        service,
        endpoint_url=local_url,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id="local",
        aws_secret_access_key="local",
        **kwargs,
    )


def _reconcile(args: argparse.Namespace) -> int:
    """Invoke `ingest-reconcile` (the scheduled function itself, not a copy of its logic): on the
    local platform through its Lambda Invoke emulator, or with --aws the deployed one. Prints the
    report; exits 1 while findings remain (a dry run's, or repairs that failed)."""
    import json

    from botocore.config import Config

    from ragline.topology import physical_name

    if args.aws and not args.function:
        print("--aws needs --function (ragline-<stage>-ingest-reconcile)", file=sys.stderr)
        return 2
    # A full pass may take minutes: wait for it, and never send it twice.
    config = Config(read_timeout=960, retries={"total_max_attempts": 1})
    client = _boto3_client("lambda", None if args.aws else args.lambda_url, config=config)
    payload = json.dumps({"dry_run": args.dry_run}).encode()
    response = client.invoke(FunctionName=args.function or physical_name("ingest-reconcile"), Payload=payload)
    report = json.loads(response["Payload"].read() or b"null")
    print(json.dumps(report, indent=1))
    if response.get("FunctionError"):
        return 1
    unresolved = report["unresolved"]
    return 1 if unresolved else 0


def _dlq(args: argparse.Namespace) -> int:
    """List the dead-letter queues' depths, or redrive one queue's: on the local platform's moto
    server, or with --aws in the deployment of --stage (your AWS credentials and region)."""

    from ragline.dlq import RedriveError, deployed_pairs, depth, local_pairs, redrive

    sqs = _boto3_client("sqs", None if args.aws else args.moto_url)
    try:
        pairs = {p.name: p for p in (deployed_pairs(sqs, args.stage) if args.aws else local_pairs(sqs))}
        if args.dlq_command == "list":
            for name, pair in pairs.items():
                print(f"{name}\t{depth(sqs, pair.dlq_url)}")
            return 0
        if args.queue not in pairs:
            print(f"no queue {args.queue!r}; the queues are {', '.join(pairs)}", file=sys.stderr)
            return 2
        moved = redrive(
            sqs,
            pairs[args.queue],
            limit=args.limit,
            progress=lambda n: print(f"{n} moved", file=sys.stderr, flush=True),
        )
    except RedriveError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{moved} messages moved from the {args.queue} dead-letter queue back to {args.queue}")
    return 0


def _llm_tokenizer(args: argparse.Namespace) -> int:
    from ragline.tokenizer import extract_gguf_tokenizer

    if not args.gguf.is_file():
        print(f"{args.gguf} is not a file", file=sys.stderr)
        return 1
    try:
        extract_gguf_tokenizer(args.gguf, args.out)
    except ImportError as exc:
        print(f"{exc}: the [local] extra (transformers, gguf) reads GGUF files", file=sys.stderr)
        return 1
    print(args.out)
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from ragline.apidocs import write_docs

    stale = write_docs(args.out, check=args.check)
    if stale:
        print("out of date (run `ragline schemas`): " + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from ragline.tiers import DEFAULT_TIER
    from ragline.topology import SCOPES

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
    dev.add_argument("--require-api-key", action="store_true", help="every call needs x-api-key, as in AWS")
    dev.set_defaults(run=_dev)

    token = commands.add_parser("token", help="issue a local bearer token")
    token.add_argument("--user", required=True)
    token.add_argument("--groups", nargs="*", default=[], help="space- or comma-separated group names")
    token.add_argument("--tenant")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument(
        "--scopes",
        nargs="*",
        help=f"of {', '.join(SCOPES)}; default: all that api.peopleScopes in cdk.json gives the groups",
    )
    token.set_defaults(run=_token)

    client = commands.add_parser(
        "client", help="register a machine client (client-credentials grant at POST /oauth2/token)"
    )
    client.add_argument("--name", required=True)
    client.add_argument("--scopes", nargs="+", required=True, help=f"allowed, of {', '.join(SCOPES)}")
    client.add_argument("--groups", nargs="*", default=[], help="groups its tokens carry")
    client.add_argument("--tenant")
    client.set_defaults(run=_client)

    api_key = commands.add_parser("api-key", help="create a local API key (x-api-key) bound to a tier")
    api_key.add_argument("--tier", default=DEFAULT_TIER, help="a tier of apiTiers in cdk.json")
    api_key.add_argument("--name", default="", help="a note kept with the key")
    api_key.set_defaults(run=_api_key)

    ingest = commands.add_parser("ingest", help="upload files and folders through the API")
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument(
        "--groups", required=True, help="groups allowed to see the documents, comma-separated"
    )
    ingest.add_argument("--collection", default="default")
    ingest.add_argument("--api", default=os.environ.get("RAGLINE_API", "http://127.0.0.1:8000"))
    ingest.add_argument("--token", default=os.environ.get("RAGLINE_TOKEN"), help="default: a local token")
    ingest.add_argument("--user", default="ragline-cli", help="the local token's user, when no --token")
    ingest.add_argument(
        "--api-key",
        default=os.environ.get("RAGLINE_API_KEY"),
        help="x-api-key (a usage plan's key; `ragline api-key` locally)",
    )
    ingest.add_argument("--concurrency", type=int, default=4, help="files in flight at once")
    ingest.set_defaults(run=_ingest)

    evaluate = commands.add_parser("eval", help="measure retrieval quality on a benchmark")
    suites = evaluate.add_subparsers(dest="suite", required=True)
    beir = suites.add_parser("beir", help="a BEIR-format dataset (corpus.jsonl, queries.jsonl, qrels/)")
    beir.add_argument("dir", type=Path)
    beir.add_argument("--split", default="test", help="the qrels file: qrels/SPLIT.tsv")
    beir.add_argument("--queries", type=int, help="only the first N judged queries (file order)")
    beir.add_argument(
        "--corpus-sample",
        type=int,
        help="a corpus of the selected queries' judged documents plus N others (seeded draw)",
    )
    beir.add_argument("--seed", type=int, default=0, help="for --corpus-sample and the random baseline")
    beir.add_argument("--modes", default="keyword,vector,hybrid", help="comma-separated")
    beir.add_argument("--fusion-k", type=int, help="hybrid RRF k (default: the deployment's)")
    beir.add_argument("--keyword-weight", type=float, help="hybrid RRF weight of the keyword list")
    beir.add_argument("--vector-weight", type=float, help="hybrid RRF weight of the vector list")
    beir.add_argument("--collection", help="default: beir-<dataset>, suffixed per corpus subset")
    beir.add_argument("--groups", default="beir-eval", help="allowed groups of the documents (and the token)")
    beir.add_argument("--concurrency", type=int, default=4, help="uploads in flight at once")
    beir.add_argument(
        "--state-dir",
        dest="eval_state_dir",
        type=Path,
        help="the platform's state directory (keys, logs), kept; default: a temporary one. A platform "
        "started here begins with an empty index: to reuse an ingested corpus across runs (tuning "
        "sweeps), keep `ragline dev` running and pass --url (its --state-dir signs the token)",
    )
    beir.add_argument("--url", help="a running gateway to evaluate instead of starting a platform")
    beir.add_argument(
        "--api-key",
        default=os.environ.get("RAGLINE_API_KEY"),
        help="x-api-key, with --url (a usage plan's key)",
    )
    beir.add_argument(
        "--token", default=os.environ.get("RAGLINE_TOKEN"), help="with --url; default: a local token"
    )
    beir.add_argument("--json", type=Path, help="also write the report (with per-query measures) here")
    beir.set_defaults(run=_eval_beir)

    schemas = commands.add_parser("schemas", help="export JSON Schemas and OpenAPI to docs/")
    schemas.add_argument("--out", type=Path, default=Path("docs"))
    schemas.add_argument("--check", action="store_true", help="fail if the committed files differ")
    schemas.set_defaults(run=_schemas)

    reindex = commands.add_parser(
        "reindex", help="rebuild the search index from the current settings (fields, HNSW), online"
    )
    reindex.set_defaults(run=_reindex)

    reconcile = commands.add_parser(
        "reconcile",
        help="compare the documents table with the search index; repair orphaned vectors and phantoms",
    )
    reconcile.add_argument(
        "--dry-run", action="store_true", help="report what would be repaired, change nothing"
    )
    reconcile.add_argument(
        "--lambda-url",
        default=os.environ.get("RAGLINE_LAMBDA_ENDPOINT_URL", "http://127.0.0.1:8001"),
        help="the local platform's Lambda Invoke emulator",
    )
    reconcile.add_argument(
        "--function",
        default=None,
        help="the deployed function's name, e.g. ragline-dev-ingest-reconcile (with --aws); "
        "default: the local platform's",
    )
    reconcile.add_argument(
        "--aws", action="store_true", help="invoke the deployed function with your AWS credentials"
    )
    reconcile.set_defaults(run=_reconcile)

    dlq = commands.add_parser("dlq", help="dead-letter queues: list their depths, redrive one")
    dlq.add_argument(
        "--aws", action="store_true", help="the deployment of --stage, with your AWS credentials"
    )
    dlq.add_argument("--stage", default="dev", help="with --aws: the stage in cdk.json")
    dlq.add_argument(
        "--moto-url", default="http://127.0.0.1:4566", help="the local platform's moto server (ragline dev)"
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_commands.add_parser("list", help="each queue's dead-letter queue depth")
    dlq_redrive = dlq_commands.add_parser("redrive", help="move a DLQ's messages back to its queue")
    dlq_redrive.add_argument("queue", help="a queue of ragline/topology.py, e.g. ingest")
    dlq_redrive.add_argument("--limit", type=int, default=None, help="at most this many (default: all)")
    dlq.set_defaults(run=_dlq)

    llm_tokenizer = commands.add_parser(
        "llm-tokenizer", help="write a GGUF model's tokenizer as tokenizer.json (prompts are packed in it)"
    )
    llm_tokenizer.add_argument("gguf", type=Path, help="the model the LLM endpoint serves")
    llm_tokenizer.add_argument("out", type=Path, help="the tokenizer.json to write")
    llm_tokenizer.set_defaults(run=_llm_tokenizer)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
