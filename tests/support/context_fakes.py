"""Stand-ins for the retriever and the model, for tests of what sits around them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from functions.context.domain.errors import ConversationFull, ConversationNotFound
from functions.context.domain.ports import CachedAnswer, StoredConversation
from ragline.contracts import Principal, SearchHit, SearchRequest, SearchResponse, Usage


def hit(n: int, text: str = "Rotate the keys every ninety days.", score: float = 0.5) -> SearchHit:
    return SearchHit(
        chunk_id=f"doc{n}:v1:0",
        document_id=f"doc{n}",
        version=1,
        ordinal=0,
        title=f"Runbook {n}",
        heading_path=["Keys"],
        text=text,
        score=score,
        char_start=0,
        char_end=len(text),
    )


@dataclass
class Delta:
    text: str


@dataclass
class Done:
    finish_reason: str
    usage: Usage


class RecordingRetriever:
    def __init__(self, hits: list[SearchHit]) -> None:
        self.hits = hits
        self.calls: list[tuple[Principal, SearchRequest]] = []

    def search(self, principal: Principal, request: SearchRequest) -> SearchResponse:
        """Applies `min_score` to the best hit's score, as search does with its relevance gate."""
        self.calls.append((principal, request))
        best = max((hit.score for hit in self.hits), default=None)
        if best is None or (request.min_score is not None and best < request.min_score):
            return SearchResponse(hits=[], no_answer=True)
        return SearchResponse(hits=self.hits)


class ScriptedLlm:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.prompts: list[list[dict[str, str]]] = []

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        self.prompts.append(messages)
        yield from (Delta(t) for t in self.tokens)
        yield Done("stop", Usage(prompt_tokens=42, completion_tokens=len(self.tokens)))


class MemoryConversations:
    """The ConversationStore protocol in a dict, with the DynamoDB adapter's rules (tested against
    each other in tests/integration/test_context_stores.py)."""

    def __init__(self) -> None:
        self.items: dict[str, StoredConversation] = {}

    def get(self, conversation_id: str) -> StoredConversation | None:
        return self.items.get(conversation_id)

    def append(self, conversation_id, owner, turn, *, expires_at, max_turns) -> None:
        stored = self.items.get(conversation_id)
        if stored is None:
            self.items[conversation_id] = StoredConversation(
                conversation_id, owner, turn.created_at, turn.created_at, expires_at, [turn]
            )
            return
        if stored.owner != owner:
            raise ConversationNotFound(conversation_id)
        if len(stored.turns) >= max_turns:
            raise ConversationFull(conversation_id)
        self.items[conversation_id] = replace(
            stored, updated_at=turn.created_at, expires_at=expires_at, turns=[*stored.turns, turn]
        )


class MemoryCache:
    """The AnswerCache protocol in dicts: generations per collection and an all-collections one."""

    def __init__(self) -> None:
        self.generations: dict[str, int] = {}
        self.entries: dict[tuple[str, str], CachedAnswer] = {}

    def scope(self, collection: str | None) -> str:
        name = collection or "*"
        return f"{name}#{self.generations.get(name, 0)}"

    def get(self, scope: str, key: str) -> CachedAnswer | None:
        return self.entries.get((scope, key))

    def put(self, scope: str, key: str, answer: CachedAnswer) -> None:
        self.entries[(scope, key)] = answer

    def invalidate(self, collection: str) -> None:
        for name in (collection, "*"):
            self.generations[name] = self.generations.get(name, 0) + 1
