"""Which answers may be served again, and under what key.

The key is the exact prompt (system prompt, history, the packed source texts, the question), the ids
of the chunks behind each source marker, the model and the answer length. The caller's own retrieval
produced that prompt, so a key can only match an answer built from chunks this caller was given:
principals that see the same chunks share answers, and one whose visibility differs in any chunk
that reaches the prompt gets a different key. The chunk ids (which carry the version) matter beside
the texts: two documents with the same text must not lend each other their citations.

Collection generations (the AnswerCache port) add the invalidation the events ask for: an answer
keyed on chunks that still exist stays correct, but a newly indexed document may deserve a place in
the prompt, so every change in a collection retires its answers."""

from __future__ import annotations

import hashlib
import json

from functions.context.domain.prompt import Prompt
from ragline.contracts import DegradedReason

# Bump when what a key covers changes, so old entries are never read with a new meaning.
KEY_FORMAT = 1


def cache_key(model_id: str, max_tokens: int, prompt: Prompt) -> str:
    material = {
        "format": KEY_FORMAT,
        "model": model_id,
        "max_tokens": max_tokens,
        "messages": prompt.messages,
        "sources": [(c.marker, c.chunk_id, c.version) for c in prompt.citations],
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def cacheable(finish_reason: str, degraded_reason: DegradedReason | None) -> bool:
    """Only what the primary model finished: a degraded answer must not outlive the outage."""
    return degraded_reason is None and finish_reason in ("stop", "length")
