"""What the answer use case knows of model failures: the adapter turns the endpoint client's errors into
these, so the domain needs no AWS or HTTP imports."""

from __future__ import annotations


class LlmFailed(Exception):
    """The LLM endpoint did not answer (down, erroring, timed out, or its circuit is open)."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.retryable = retryable
