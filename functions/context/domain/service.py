"""The answer use case: retrieve with the caller's principal, build the prompt, stream the model.

It yields (event name, payload) pairs; the HTTP layer decides whether they become Server-Sent
Events or one JSON body.

An answer is never an error because a model failed. When the primary LLM fails before its first token
(down, erroring, timed out, circuit open) the secondary LLM answers if there is one, else the answer
quotes the top retrieved chunks; either way `done` says `degraded: true` and why. When a model fails
after tokens were sent, those tokens cannot be taken back and another model's answer would repeat them:
the answer ends there, with its citations, `finish_reason: "interrupted"` and `degraded: true`.

Conversations: a follow-up is first rewritten with its history into a standalone question, which
retrieval uses; the history itself goes into the prompt. Every answer is recorded as a turn before
its citations are sent, so a client that saw `done` can read it back.

Cache: answers are looked up by their exact prompt and sources (domain/caching.py), after the caller's
own retrieval, so a cached answer can only be one built from chunks the caller was just given."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel

from functions.context.domain.caching import cache_key, cacheable
from functions.context.domain.citations import MarkerFilter
from functions.context.domain.errors import ConversationFull, ConversationNotFound, LlmFailed
from functions.context.domain.extractive import extractive_answer
from functions.context.domain.ports import (
    AnswerCache,
    CachedAnswer,
    ConversationStore,
    LlmStream,
    Owner,
    Retriever,
)
from functions.context.domain.prompt import (
    CONDENSE_MAX_TOKENS,
    Prompt,
    build_prompt,
    condense_messages,
    estimate_tokens,
    standalone_from,
)
from ragline.contracts import (
    AnswerRequest,
    AnswerTimings,
    Citation,
    CitationsEvent,
    Conversation,
    ConversationTurn,
    DegradedReason,
    DoneEvent,
    Principal,
    SearchHit,
    SearchRequest,
    SearchResponse,
    TokenEvent,
    Usage,
    new_id,
    utcnow,
)

__all__ = ["AnswerEvent", "AnswerService", "LlmStream", "NO_DOCUMENTS_ANSWER", "Retriever"]

NO_DOCUMENTS_ANSWER = "I could not find any documents you can access that answer this question."
NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0)

AnswerEvent = tuple[str, BaseModel]

log = logging.getLogger(__name__)


@dataclass
class _Outcome:
    citations: list[Citation]
    usage: Usage
    finish_reason: str
    degraded_reason: DegradedReason | None = None
    cached: bool = False


@dataclass
class _Transcript:
    """The answer's text as it is sent, and when each phase ended (perf_counter seconds)."""

    timer: Callable[[], float]
    started: float
    parts: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    first_token_at: float | None = None

    def token(self, text: str) -> AnswerEvent:
        if self.first_token_at is None:
            self.first_token_at = self.timer()
        self.parts.append(text)
        return "token", TokenEvent(text=text)

    def mark(self, phase: str) -> None:
        self.marks[phase] = self.timer()

    def timings(self) -> AnswerTimings:
        end = self.timer()

        def ms(later: float | None, earlier: float) -> float:
            return round((later - earlier) * 1000, 2) if later is not None else 0.0

        condensed = self.marks.get("condensed", self.started)
        retrieved = self.marks.get("retrieved", condensed)
        assembled = self.marks.get("assembled", retrieved)
        return AnswerTimings(
            condense_ms=ms(condensed, self.started),
            retrieval_ms=ms(retrieved, condensed),
            assembly_ms=ms(assembled, retrieved),
            first_token_ms=ms(self.first_token_at, self.started) if self.first_token_at else None,
            generation_ms=ms(end, assembled),
            total_ms=ms(end, self.started),
        )


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
        conversations: ConversationStore | None = None,
        conversation_ttl: timedelta = timedelta(days=30),
        max_turns: int = 20,
        cache: AnswerCache | None = None,
        model_id: str = "llm",
        clock: Callable[[], datetime] = utcnow,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`on_invented_citations`: told how many markers an answer cited that were not among its
        sources (they are removed from the text); the wiring turns it into a metric. `model_id` names
        the model behind `llm` in cache keys, so a new model never serves an old model's answers."""
        self._retriever = retriever
        self._llm = llm
        self._secondary_llm = secondary_llm
        self._window = context_window_tokens
        self._min_score = min_score
        self._on_invented = on_invented_citations
        self._count_tokens = count_tokens  # in the LLM's own tokens when its tokenizer is configured
        self._conversations = conversations
        self._conversation_ttl = conversation_ttl
        self._max_turns = max_turns
        self._cache = cache
        self._model_id = model_id
        self._clock = clock
        self._timer = timer

    def answer(self, principal: Principal, request: AnswerRequest) -> Iterator[AnswerEvent]:
        """Refusals (an unknown or full conversation) are raised here, before the first event; the
        answer itself streams from the returned iterator."""
        history: list[ConversationTurn] = []
        conversation_id = request.conversation_id
        if conversation_id is not None:
            history = self.conversation(principal, conversation_id).turns
            if len(history) >= self._max_turns:
                raise ConversationFull(conversation_id)
        elif self._conversations is not None:
            conversation_id = new_id()
        return self._answer(principal, request, conversation_id, history)

    def conversation(self, principal: Principal, conversation_id: str) -> Conversation:
        stored = self._conversations.get(conversation_id) if self._conversations else None
        if stored is None or stored.owner != Owner.of(principal):
            raise ConversationNotFound(conversation_id)
        return Conversation(
            conversation_id=stored.conversation_id,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            expires_at=stored.expires_at,
            turns=stored.turns,
        )

    def _answer(
        self,
        principal: Principal,
        request: AnswerRequest,
        conversation_id: str | None,
        history: list[ConversationTurn],
    ) -> Iterator[AnswerEvent]:
        transcript = _Transcript(self._timer, self._timer())
        # Read before retrieval: an answer racing an invalidation is stored in the old generation.
        scope = self._cache.scope(request.collection) if self._cache and request.cache else None
        standalone = self._condense(history, request.question) if history else None
        transcript.mark("condensed")
        found = self._search(principal, request, standalone or request.question)
        if standalone and (found.no_answer or not found.hits):
            # A weak rewrite can lose the subject; the two questions together often keep it.
            found = self._search(principal, request, f"{_previous(history)} {request.question}")
        transcript.mark("retrieved")
        if found.no_answer or not found.hits:
            # Nothing the caller may see is relevant: answer without spending a model call.
            yield transcript.token(NO_DOCUMENTS_ANSWER)
            outcome = _Outcome(citations=[], usage=NO_USAGE, finish_reason="no_documents")
        else:
            prompt = build_prompt(
                standalone or request.question,
                found.hits,
                context_window=self._window,
                max_tokens=request.max_tokens,
                count_tokens=self._count_tokens,
                history=history,
            )
            key = cache_key(self._model_id, request.max_tokens, prompt)
            transcript.mark("assembled")
            cached = self._cache.get(scope, key) if self._cache and scope else None
            if cached is not None:
                for text in cached.tokens:
                    yield transcript.token(text)
                outcome = _Outcome(cached.citations, NO_USAGE, cached.finish_reason, cached=True)
            else:
                outcome = yield from self._generated(prompt, request.max_tokens, found.hits, transcript)
                if self._cache and scope and cacheable(outcome.finish_reason, outcome.degraded_reason):
                    answer = CachedAnswer(
                        transcript.parts, outcome.citations, outcome.finish_reason, outcome.usage
                    )
                    self._cache.put(scope, key, answer)
        turn = self._record(principal, request, conversation_id, history, standalone, transcript, outcome)
        yield "citations", CitationsEvent(citations=outcome.citations)
        yield (
            "done",
            DoneEvent(
                usage=outcome.usage,
                finish_reason=outcome.finish_reason,
                degraded=outcome.degraded_reason is not None,
                degraded_reason=outcome.degraded_reason,
                cached=outcome.cached,
                conversation_id=conversation_id,
                turn=turn,
                standalone_question=standalone,
                timings=transcript.timings(),
            ),
        )

    def _search(self, principal: Principal, request: AnswerRequest, query: str) -> SearchResponse:
        return self._retriever.search(
            principal,
            SearchRequest(
                query=query, top_k=request.top_k, collection=request.collection, min_score=self._min_score
            ),
        )

    def _condense(self, history: list[ConversationTurn], question: str) -> str:
        """The follow-up as a standalone question. If the model cannot say, the previous question and
        this one together still retrieve better than the follow-up alone."""
        messages = condense_messages(
            history, question, context_window=self._window, count_tokens=self._count_tokens
        )
        text: list[str] = []
        stream = self._llm.stream(messages, max_tokens=CONDENSE_MAX_TOKENS, stop=["\n\n"])
        try:
            for part in stream:
                if getattr(part, "usage", None) is None and part.text:
                    text.append(part.text)
        except LlmFailed as exc:
            log.warning(
                "could not condense the follow-up (%s); retrieving with the last two questions", exc.code
            )
            text = []
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return standalone_from("".join(text)) or f"{_previous(history)} {question}"

    def _generated(
        self, prompt: Prompt, max_tokens: int, hits: list[SearchHit], transcript: _Transcript
    ) -> Generator[AnswerEvent, None, _Outcome]:
        models: list[tuple[LlmStream, DegradedReason | None]] = [(self._llm, None)]
        if self._secondary_llm is not None:
            models.append((self._secondary_llm, "secondary_llm"))
        for llm, degraded_reason in models:
            outcome = yield from self._generate(llm, prompt, max_tokens, degraded_reason, transcript)
            if outcome is not None:
                return outcome
        extract = extractive_answer(hits)
        for part in extract.parts:
            yield transcript.token(part)
        return _Outcome(extract.citations, NO_USAGE, "extractive", degraded_reason="extractive")

    def _generate(
        self,
        llm: LlmStream,
        prompt: Prompt,
        max_tokens: int,
        degraded_reason: DegradedReason | None,
        transcript: _Transcript,
    ) -> Generator[AnswerEvent, None, _Outcome | None]:
        """One model's answer. Returns None, having yielded nothing, when the model failed before
        its first token (the caller tries the next one)."""
        outcome = _Outcome(prompt.citations, NO_USAGE, "unknown", degraded_reason)
        tokens = 0
        markers = MarkerFilter({citation.marker for citation in prompt.citations})
        stream = llm.stream(prompt.messages, max_tokens=max_tokens)
        try:
            for part in stream:
                usage = getattr(part, "usage", None)
                if usage is not None:
                    outcome.usage = Usage.model_validate(usage, from_attributes=True)
                    outcome.finish_reason = part.finish_reason
                elif part.text:
                    tokens += 1
                    if shown := markers.feed(part.text):
                        yield transcript.token(shown)
        except LlmFailed as exc:
            if not tokens:
                log.warning("LLM failed before answering (%s); falling back", exc.code)
                return None
            log.warning("LLM failed after %d tokens (%s); the answer ends there", tokens, exc.code)
            outcome.usage = Usage(prompt_tokens=0, completion_tokens=tokens)
            outcome.finish_reason = outcome.degraded_reason = "interrupted"
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # an abandoned answer closes the model connection: generation stops
        if rest := markers.flush():
            yield transcript.token(rest)
        if markers.invented:
            log.warning("removed citation markers with no source: %s", markers.invented)
            self._on_invented(len(markers.invented))
        return outcome

    def _record(
        self,
        principal: Principal,
        request: AnswerRequest,
        conversation_id: str | None,
        history: list[ConversationTurn],
        standalone: str | None,
        transcript: _Transcript,
        outcome: _Outcome,
    ) -> int | None:
        """Keep the turn; returns its number, or None when the conversation filled up meanwhile."""
        if conversation_id is None or self._conversations is None:
            return None
        now = self._clock()
        turn = ConversationTurn(
            turn=len(history) + 1,
            question=request.question,
            standalone_question=standalone,
            answer="".join(transcript.parts),
            citations=outcome.citations,
            finish_reason=outcome.finish_reason,
            degraded=outcome.degraded_reason is not None,
            cached=outcome.cached,
            created_at=now,
        )
        try:
            self._conversations.append(
                conversation_id,
                Owner.of(principal),
                turn,
                expires_at=now + self._conversation_ttl,
                max_turns=self._max_turns,
            )
        except ConversationFull:
            # Concurrent follow-ups filled it after this one was admitted: the answer stands.
            log.warning("conversation %s filled up before this turn was recorded", conversation_id)
            return None
        return turn.turn


def _previous(history: list[ConversationTurn]) -> str:
    return history[-1].standalone_question or history[-1].question
