"""Prompts packed in the LLM's own tokens: the local platform extracts the bundled model's tokenizer
from its GGUF, and packing with it fits text the character estimate gets wrong."""

from __future__ import annotations

import hashlib

import pytest

from functions.context.domain.prompt import build_prompt, estimate_tokens
from ragline.local.platform import llm_tokenizer_path
from ragline.tokenizer import HfTokenCounter
from tests.support.context_fakes import hit


@pytest.fixture(scope="module")
def llm_tokens(tmp_path_factory) -> HfTokenCounter:
    state = tmp_path_factory.mktemp("state")
    path = llm_tokenizer_path(state)
    assert path is not None and llm_tokenizer_path(state) == path  # extracted once, then reused
    return HfTokenCounter.from_file(path)


def prompt_tokens(counter: HfTokenCounter, messages: list[dict[str, str]]) -> int:
    return sum(counter.count(message["content"]) for message in messages)


def test_the_extracted_tokenizer_is_smollm2s(llm_tokens):
    # SmolLM2's BPE: common English words are one token each, with their leading space.
    assert llm_tokens.count("Rotate the keys every ninety days.") == 8


def test_packing_in_real_tokens_fits_text_the_estimate_undercounts(llm_tokens):
    # Hex digests: about one character a token, so "characters / 3" undercounts threefold.
    def dense(n: int) -> str:
        return " ".join(hashlib.sha256(f"{n}-{i}".encode()).hexdigest()[:32] for i in range(12))

    hits = [hit(n, text=dense(n)) for n in range(1, 30)]
    window, answer = 2048, 256

    estimated = build_prompt("which digest?", hits, context_window=window, max_tokens=answer)
    assert prompt_tokens(llm_tokens, estimated.messages) > window - answer  # would not fit

    exact = build_prompt(
        "which digest?", hits, context_window=window, max_tokens=answer, count_tokens=llm_tokens.count
    )
    used = prompt_tokens(llm_tokens, exact.messages)
    assert used <= window - answer
    assert used > (window - answer) * 0.7  # and the window is used, not wasted
    assert len(exact.citations) < len(estimated.citations)
    assert estimate_tokens(dense(1)) < llm_tokens.count(dense(1))
