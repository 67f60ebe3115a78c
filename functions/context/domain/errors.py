"""What the answer use case knows of model failures: the adapter turns the endpoint client's errors into
these, so the domain needs no AWS or HTTP imports."""

from __future__ import annotations


class LlmFailed(Exception):
    """The LLM endpoint did not answer (down, erroring, timed out, or its circuit is open)."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.retryable = retryable


class ConversationNotFound(Exception):
    """No such conversation for this caller: absent, expired, or someone else's (indistinguishable on
    purpose, so ids cannot be probed)."""

    code = "conversation_not_found"


class ConversationFull(Exception):
    """The conversation holds the most turns it may; the caller starts a new one."""

    code = "conversation_full"
