"""The answer use case: retrieve with the caller's principal, build the prompt, stream the model.

It yields (event name, payload) pairs; the HTTP layer decides whether they become Server-Sent
Events or one JSON body.

An answer is never an error because a model failed. When the primary LLM fails before its first token
(down, erroring, timed out, circuit open) the secondary LLM answers if there is one, else the answer
quotes the top retrieved chunks; either way `done` says `degraded: true` and why. When a model fails
after tokens were sent, those tokens cannot be taken back and another model's answer would repeat them:
the answer ends there, with its citations, `finish_reason: "interrupted"` and `degraded: true`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from typing import Protocol

from pydantic import BaseModel

from functions.context.domain.citations import MarkerFilter
from functions.context.domain.errors import LlmFailed
from functions.context.domain.extractive import extractive_answer
from functions.context.domain.prompt import Prompt, build_prompt, estimate_tokens
from ragline.contracts import (
    AnswerRequest,
    CitationsEvent,
    DegradedReason,
    DoneEvent,
    Principal,
    SearchHit,
    SearchRequest,
    SearchResponse,
    TokenEvent,
    Usage,
)

NO_DOCUMENTS_ANSWER = "I could not find any documents you can access that answer this question."

AnswerEvent = tuple[str, BaseModel]

log = logging.getLogger(__name__)


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


class AnswerService:
    def __init__(
        self,
        retriever: Retriever,
        llm: LlmStream,
        *,
        context_window_tokens: int,
        min_score: float | None = None,
        secondary_llm: LlmStream | None = None,
        on_invented_citations: Callable[[int], None] = lambda count: None,
        count_tokens: Callable[[str], int] = estimate_tokens,
    ) -> None:
        """`on_invented_citations`: told how many markers an answer cited that were not among its
        sources (they are removed from the text); the wiring turns it into a metric."""
        self._retriever = retriever
        self._llm = llm
        self._secondary_llm = secondary_llm
        self._window = context_window_tokens
        self._min_score = min_score
        self._on_invented = on_invented_citations
        self._count_tokens = count_tokens  # in the LLM's own tokens when its tokenizer is configured

    def answer(self, principal: Principal, request: AnswerRequest) -> Iterator[AnswerEvent]:
        found = self._retriever.search(
            principal,
            SearchRequest(
                query=request.question,
                top_k=request.top_k,
                collection=request.collection,
                min_score=self._min_score,
            ),
        )
        hits = found.hits
        if found.no_answer or not hits:
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
            count_tokens=self._count_tokens,
        )
        models: list[tuple[LlmStream, DegradedReason | None]] = [(self._llm, None)]
        if self._secondary_llm is not None:
            models.append((self._secondary_llm, "secondary_llm"))
        for llm, degraded_reason in models:
            answered = yield from self._generate(llm, prompt, request.max_tokens, degraded_reason)
            if answered:
                return
        yield from self._extract(hits)

    def _generate(
        self, llm: LlmStream, prompt: Prompt, max_tokens: int, degraded_reason: DegradedReason | None
    ) -> Generator[AnswerEvent, None, bool]:
        """One model's answer, ending with citations and done. Returns False, having yielded nothing,
        when the model failed before its first token (the caller tries the next one)."""
        done: DoneEvent | None = None
        tokens = 0
        markers = MarkerFilter({citation.marker for citation in prompt.citations})
        stream = llm.stream(prompt.messages, max_tokens=max_tokens)
        try:
            for part in stream:
                usage = getattr(part, "usage", None)
                if usage is not None:
                    done = DoneEvent(
                        usage=Usage.model_validate(usage, from_attributes=True),
                        finish_reason=part.finish_reason,
                        degraded=degraded_reason is not None,
                        degraded_reason=degraded_reason,
                    )
                elif part.text:
                    tokens += 1
                    if shown := markers.feed(part.text):
                        yield "token", TokenEvent(text=shown)
        except LlmFailed as exc:
            if not tokens:
                log.warning("LLM failed before answering (%s); falling back", exc.code)
                return False
            log.warning("LLM failed after %d tokens (%s); the answer ends there", tokens, exc.code)
            done = DoneEvent(
                usage=Usage(prompt_tokens=0, completion_tokens=tokens),
                finish_reason="interrupted",
                degraded=True,
                degraded_reason="interrupted",
            )
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # an abandoned answer closes the model connection: generation stops
        if rest := markers.flush():
            yield "token", TokenEvent(text=rest)
        if markers.invented:
            log.warning("removed citation markers with no source: %s", markers.invented)
            self._on_invented(len(markers.invented))
        yield "citations", CitationsEvent(citations=prompt.citations)
        yield (
            "done",
            done or DoneEvent(usage=Usage(prompt_tokens=0, completion_tokens=0), finish_reason="unknown"),
        )
        return True

    def _extract(self, hits: list[SearchHit]) -> Iterator[AnswerEvent]:
        extract = extractive_answer(hits)
        for part in extract.parts:
            yield "token", TokenEvent(text=part)
        yield "citations", CitationsEvent(citations=extract.citations)
        yield (
            "done",
            DoneEvent(
                usage=Usage(prompt_tokens=0, completion_tokens=0),
                finish_reason="extractive",
                degraded=True,
                degraded_reason="extractive",
            ),
        )
