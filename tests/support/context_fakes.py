"""Stand-ins for the retriever and the model, for tests of what sits around them."""

from __future__ import annotations

from dataclasses import dataclass

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
