"""A model's tokenizer as a token counter (HuggingFace `tokenizers`, tokenizer.json): the embedding
model's sizes chunks (ingest), the LLM's sizes prompts (context)."""

from __future__ import annotations

from tokenizers import Tokenizer


class HfTokenCounter:
    def __init__(self, tokenizer: Tokenizer) -> None:
        # tokenizer.json files often carry the model's truncation and padding (all-MiniLM-L6-v2:
        # both at 128); either would make counts lie, so both are switched off for counting.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str) -> HfTokenCounter:
        return cls(Tokenizer.from_file(path))

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_with_special_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)
