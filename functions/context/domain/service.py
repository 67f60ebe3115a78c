"""The answer use case: retrieve with the caller's principal, build the prompt, stream the model.

It yields (event name, payload) pairs; the HTTP layer decides whether they become Server-Sent
Events or one JSON body."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from pydantic import BaseModel

from functions.context.domain.prompt import build_prompt
from ragline.contracts import (
    AnswerRequest,
    CitationsEvent,
    DoneEvent,
    Principal,
    SearchRequest,
    SearchResponse,
    TokenEvent,
    Usage,
)

NO_DOCUMENTS_ANSWER = "I could not find any documents you can access that answer this question."

AnswerEvent = tuple[str, BaseModel]


class Retriever(Protocol):
    def search(self, principal: Principal, request: SearchRequest) -> SearchResponse: ...


class LlmStream(Protocol):
    """The LLM client: yields parts with `.text`, then one final part with `.finish_reason` and `.usage`."""

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[object]: ...


class AnswerService:
    def __init__(
        self, retriever: Retriever, llm: LlmStream, *, context_window_tokens: int, min_score: float = 0.0
    ) -> None:
        self._retriever = retriever
        self._llm = llm
        self._window = context_window_tokens
        self._min_score = min_score

    def answer(self, principal: Principal, request: AnswerRequest) -> Iterator[AnswerEvent]:
        found = self._retriever.search(
            principal,
            SearchRequest(query=request.question, top_k=request.top_k, collection=request.collection),
        )
        hits = [hit for hit in found.hits if hit.score >= self._min_score]
        if not hits:
            # Nothing the caller may see is relevant: answer without spending a model call.
            yield "token", TokenEvent(text=NO_DOCUMENTS_ANSWER)
            yield "citations", CitationsEvent(citations=[])
            yield (
                "done",
                DoneEvent(usage=Usage(prompt_tokens=0, completion_tokens=0), finish_reason="no_documents"),
            )
            return

        prompt = build_prompt(
            request.question,
            hits,
            context_window=self._window,
            max_tokens=request.max_tokens,
        )
        done: DoneEvent | None = None
        for part in self._llm.stream(prompt.messages, max_tokens=request.max_tokens):
            usage = getattr(part, "usage", None)
            if usage is not None:
                done = DoneEvent(
                    usage=Usage.model_validate(usage, from_attributes=True), finish_reason=part.finish_reason
                )
            elif part.text:
                yield "token", TokenEvent(text=part.text)
        yield "citations", CitationsEvent(citations=prompt.citations)
        yield (
            "done",
            done or DoneEvent(usage=Usage(prompt_tokens=0, completion_tokens=0), finish_reason="unknown"),
        )
