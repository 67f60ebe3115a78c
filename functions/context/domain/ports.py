"""What the answer use case needs from the outside world, as protocols the adapters implement.

Conversations and cached answers are context's own data (DynamoDB tables in AWS and on the local
platform alike); retrieval is the retrieve context's API; the LLM is a model endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ragline.contracts import Citation, ConversationTurn, Principal, SearchRequest, SearchResponse, Usage


class Retriever(Protocol):
    def search(self, principal: Principal, request: SearchRequest) -> SearchResponse: ...


class LlmStream(Protocol):
    """The LLM client: yields parts with `.text`, then one final part with `.finish_reason` and `.usage`;
    raises LlmFailed when the model does not answer. Closing the iterator stops generation."""

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[object]: ...


@dataclass(frozen=True)
class Owner:
    """Whose conversation it is: the user, within their tenant."""

    user_id: str
    tenant: str | None

    @classmethod
    def of(cls, principal: Principal) -> Owner:
        return cls(principal.user_id, principal.tenant)


@dataclass(frozen=True)
class StoredConversation:
    conversation_id: str
    owner: Owner
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    turns: list[ConversationTurn]


class ConversationStore(Protocol):
    def get(self, conversation_id: str) -> StoredConversation | None:
        """The conversation, or None when there is none (or it expired and awaits TTL deletion)."""
        ...

    def append(
        self,
        conversation_id: str,
        owner: Owner,
        turn: ConversationTurn,
        *,
        expires_at: datetime,
        max_turns: int,
    ) -> None:
        """Add `turn` (creating the conversation if it does not exist) and move its expiry to
        `expires_at`, atomically. Raises ConversationNotFound when it belongs to someone else and
        ConversationFull when it already holds `max_turns` turns."""
        ...


@dataclass(frozen=True)
class CachedAnswer:
    tokens: list[str]  # the answer's text as it was streamed, replayed event for event
    citations: list[Citation]
    finish_reason: str
    usage: Usage  # what generating it cost, once


class AnswerCache(Protocol):
    """Answers by prompt, in generations per collection: invalidating a collection starts a new
    generation, so entries of the old one are never read again (TTL removes them)."""

    def scope(self, collection: str | None) -> str:
        """The current generation of `collection` (None: all collections), read before retrieval so
        an answer that raced an invalidation is stored under the generation it was built in."""
        ...

    def get(self, scope: str, key: str) -> CachedAnswer | None: ...

    def put(self, scope: str, key: str, answer: CachedAnswer) -> None: ...

    def invalidate(self, collection: str) -> None:
        """Start a new generation of `collection` and of the all-collections scope."""
        ...
