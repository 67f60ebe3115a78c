"""Conversations and the answer cache in the answer service, with in-memory stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from functions.context.domain.errors import ConversationFull, ConversationNotFound, LlmFailed
from functions.context.domain.ports import Owner
from functions.context.domain.prompt import (
    CONDENSE_PROMPT,
    SYSTEM_PROMPT,
    build_prompt,
    estimate_tokens,
    recent_history,
)
from functions.context.domain.service import AnswerService
from ragline.contracts import (
    AnswerRequest,
    CitationsEvent,
    ConversationTurn,
    DoneEvent,
    Principal,
    SearchResponse,
    TokenEvent,
    Usage,
)
from tests.support.context_fakes import (
    Delta,
    Done,
    MemoryCache,
    MemoryConversations,
    RecordingRetriever,
    ScriptedLlm,
    hit,
)

ALICE = Principal(user_id="alice", groups=frozenset({"eng"}), tenant="acme")
BOB = Principal(user_id="bob", groups=frozenset({"eng"}), tenant="acme")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Replies:
    """An LLM that gives each call its own scripted reply (condense, then answer, ...)."""

    def __init__(self, *replies: list[str] | Exception) -> None:
        self.replies = list(replies)
        self.prompts: list[list[dict[str, str]]] = []

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        self.prompts.append(messages)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        yield from (Delta(t) for t in reply)
        yield Done("stop", Usage(prompt_tokens=10, completion_tokens=len(reply)))


def service(retriever, llm, **kwargs) -> AnswerService:
    kwargs.setdefault("conversations", MemoryConversations())
    return AnswerService(retriever, llm, context_window_tokens=2048, clock=lambda: NOW, **kwargs)


def run(svc: AnswerService, principal: Principal, **request) -> list[tuple[str, object]]:
    return list(svc.answer(principal, AnswerRequest(**request)))


def text_of(events) -> str:
    return "".join(e.text for _, e in events if isinstance(e, TokenEvent))


def done_of(events) -> DoneEvent:
    name, done = events[-1]
    assert name == "done" and isinstance(done, DoneEvent)
    return done


def citations_of(events):
    return next(e for _, e in events if isinstance(e, CitationsEvent)).citations


def test_a_first_answer_starts_a_conversation_and_records_its_turn():
    store = MemoryConversations()
    svc = service(RecordingRetriever([hit(1)]), ScriptedLlm(["Ninety ", "days [1]."]), conversations=store)

    events = run(svc, ALICE, question="How often are keys rotated?")

    done = done_of(events)
    assert done.turn == 1 and done.standalone_question is None
    conversation = svc.conversation(ALICE, done.conversation_id)
    [turn] = conversation.turns
    assert turn.question == "How often are keys rotated?" and turn.answer == "Ninety days [1]."
    assert [c.chunk_id for c in turn.citations] == [c.chunk_id for c in citations_of(events)]
    assert conversation.expires_at == NOW + timedelta(days=30)


def test_a_follow_up_is_condensed_for_retrieval_and_answered_with_its_history():
    retriever = RecordingRetriever([hit(1)])
    llm = Replies(
        ["Keys rotate every ninety days [1]."],
        ["How often are API keys rotated?\n"],  # the condensed follow-up
        ["Also ninety days [1]."],
    )
    svc = service(retriever, llm)
    first = done_of(run(svc, ALICE, question="How often are database keys rotated?"))

    events = run(svc, ALICE, question="And API keys?", conversation_id=first.conversation_id)

    condense, answer = llm.prompts[1], llm.prompts[2]
    assert condense[0]["content"] == CONDENSE_PROMPT
    assert "User: How often are database keys rotated?" in condense[1]["content"]
    assert "Assistant: Keys rotate every ninety days." in condense[1]["content"]  # markers stripped
    assert condense[1]["content"].rstrip().endswith("Standalone question:")
    assert retriever.calls[1][1].query == "How often are API keys rotated?"
    # The answer prompt: system, the earlier turn, then sources with the standalone question.
    assert [m["role"] for m in answer] == ["system", "user", "assistant", "user"]
    assert answer[0]["content"] == SYSTEM_PROMPT
    assert answer[1]["content"] == "How often are database keys rotated?"
    assert answer[2]["content"] == "Keys rotate every ninety days."
    assert answer[3]["content"].endswith("Question: How often are API keys rotated?")
    done = done_of(events)
    assert (done.conversation_id, done.turn) == (first.conversation_id, 2)
    assert done.standalone_question == "How often are API keys rotated?"
    turns = svc.conversation(ALICE, first.conversation_id).turns
    assert [t.question for t in turns] == ["How often are database keys rotated?", "And API keys?"]
    assert turns[1].standalone_question == "How often are API keys rotated?"


def test_when_condensing_fails_retrieval_uses_both_questions():
    retriever = RecordingRetriever([hit(1)])
    llm = Replies(["Ninety days [1]."], LlmFailed("unavailable", "down", retryable=True), ["Same [1]."])
    svc = service(retriever, llm)
    first = done_of(run(svc, ALICE, question="How often are keys rotated?"))

    events = run(svc, ALICE, question="And certificates?", conversation_id=first.conversation_id)

    assert retriever.calls[1][1].query == "How often are keys rotated? And certificates?"
    assert text_of(events) == "Same [1]."


@pytest.mark.parametrize(
    "stranger",
    [
        Principal(user_id="bob", groups=frozenset({"eng"}), tenant="acme"),
        Principal(user_id="alice", groups=frozenset({"eng"}), tenant="globex"),  # same id, other tenant
    ],
)
def test_only_the_owner_can_read_or_continue_a_conversation(stranger):
    store = MemoryConversations()
    svc = service(RecordingRetriever([hit(1)]), ScriptedLlm(["Ninety days."]), conversations=store)
    conversation_id = done_of(run(svc, ALICE, question="How often?")).conversation_id

    with pytest.raises(ConversationNotFound):
        svc.conversation(stranger, conversation_id)
    with pytest.raises(ConversationNotFound):  # refused before any event is produced
        svc.answer(stranger, AnswerRequest(question="And?", conversation_id=conversation_id))
    assert len(store.items[conversation_id].turns) == 1


def test_an_unknown_conversation_is_not_found():
    svc = service(RecordingRetriever([hit(1)]), ScriptedLlm(["x"]))
    with pytest.raises(ConversationNotFound):
        svc.answer(ALICE, AnswerRequest(question="q", conversation_id="0" * 32))


def test_a_full_conversation_is_refused_before_answering():
    llm = ScriptedLlm(["Ninety days."])
    svc = service(RecordingRetriever([hit(1)]), llm, max_turns=2)
    conversation_id = done_of(run(svc, ALICE, question="q1")).conversation_id
    run(svc, ALICE, question="q2", conversation_id=conversation_id)
    calls = len(llm.prompts)

    with pytest.raises(ConversationFull):
        svc.answer(ALICE, AnswerRequest(question="q3", conversation_id=conversation_id))
    assert len(llm.prompts) == calls


def test_no_relevant_documents_is_recorded_as_a_turn_too():
    svc = service(RecordingRetriever([]), ScriptedLlm(["never"]))
    done = done_of(run(svc, ALICE, question="Anything?"))
    [turn] = svc.conversation(ALICE, done.conversation_id).turns
    assert turn.finish_reason == "no_documents" and turn.citations == []


def turn(n: int, words: int) -> ConversationTurn:
    return ConversationTurn(
        turn=n,
        question=f"question {n}",
        answer="word " * words,
        citations=[],
        finish_reason="stop",
        created_at=NOW,
    )


def test_history_keeps_the_newest_whole_turns_that_fit():
    history = [turn(1, 50), turn(2, 50), turn(3, 50)]
    one_turn = sum(
        estimate_tokens(m["content"]) + 4 for m in recent_history(history[-1:], 10_000, estimate_tokens)
    )

    kept = recent_history(history, budget=2 * one_turn + 5, count_tokens=estimate_tokens)

    assert [m["content"] for m in kept if m["role"] == "user"] == ["question 2", "question 3"]


def test_history_never_crowds_out_the_sources():
    history = [turn(n, 400) for n in range(1, 6)]  # far more than the window
    llm = Replies(["standalone?"], ["ok [1]."])
    store = MemoryConversations()
    svc = service(RecordingRetriever([hit(1)]), llm, conversations=store)
    for t in history:
        store.append("c" * 32, Owner.of(ALICE), t, expires_at=NOW + timedelta(days=1), max_turns=20)

    run(svc, ALICE, question="and then?", conversation_id="c" * 32)

    answer = llm.prompts[1]
    assert "Runbook 1" in answer[-1]["content"]  # the source made it in
    history_tokens = sum(estimate_tokens(m["content"]) for m in answer[1:-1])
    assert history_tokens <= 0.25 * 2048


# ---- the cache -------------------------------------------------------------------------------


def test_the_same_question_over_the_same_sources_is_served_from_the_cache():
    cache, llm = MemoryCache(), ScriptedLlm(["Ninety ", "days [1]."])
    svc = service(RecordingRetriever([hit(1), hit(2)]), llm, cache=cache)

    first = run(svc, ALICE, question="How often?")
    second = run(svc, BOB, question="How often?")  # same visibility: the same chunks came back

    assert len(llm.prompts) == 1
    assert [e.text for _, e in second if isinstance(e, TokenEvent)] == ["Ninety ", "days [1]."]
    assert citations_of(second) == citations_of(first)
    assert done_of(second).cached and not done_of(first).cached
    assert done_of(second).usage == Usage(prompt_tokens=0, completion_tokens=0)
    # Bob's own conversation records the cached turn, marked as such.
    assert svc.conversation(BOB, done_of(second).conversation_id).turns[0].cached


def test_a_caller_whose_retrieval_differs_gets_a_fresh_answer():
    cache, llm = MemoryCache(), ScriptedLlm(["Ninety days [1]."])
    sees_both = service(RecordingRetriever([hit(1), hit(2)]), llm, cache=cache)
    sees_one = service(
        RecordingRetriever([hit(2)]), llm, cache=cache
    )  # chunk 1 is not visible to this caller

    run(sees_both, ALICE, question="How often?")
    events = run(sees_one, BOB, question="How often?")

    assert len(llm.prompts) == 2 and not done_of(events).cached
    assert {c.document_id for c in citations_of(events)} == {"doc2"}


def test_identical_text_in_another_document_does_not_share_an_answer():
    cache, llm = MemoryCache(), ScriptedLlm(["Ninety days [1]."])
    original = hit(1)
    copy = original.model_copy(update={"chunk_id": "doc9:v1:0", "document_id": "doc9"})
    run(service(RecordingRetriever([original]), llm, cache=cache), ALICE, question="How often?")

    events = run(service(RecordingRetriever([copy]), llm, cache=cache), BOB, question="How often?")

    assert not done_of(events).cached and citations_of(events)[0].document_id == "doc9"


def test_a_change_in_the_collection_retires_its_cached_answers():
    cache, llm = MemoryCache(), ScriptedLlm(["Ninety days [1]."])
    svc = service(RecordingRetriever([hit(1)]), llm, cache=cache)
    run(svc, ALICE, question="How often?", collection="runbooks")
    cache.invalidate("runbooks")

    assert not done_of(run(svc, ALICE, question="How often?", collection="runbooks")).cached
    assert done_of(run(svc, ALICE, question="How often?", collection="runbooks")).cached
    cache.invalidate("other")  # also retires the all-collections scope, not this collection's
    assert done_of(run(svc, ALICE, question="How often?", collection="runbooks")).cached


def test_degraded_answers_are_not_cached():
    cache = MemoryCache()
    down = Replies(*[LlmFailed("unavailable", "down", retryable=True)] * 3)
    svc = service(RecordingRetriever([hit(1)]), down, cache=cache)
    assert done_of(run(svc, ALICE, question="How often?")).degraded
    assert cache.entries == {}


def test_cache_false_neither_reads_nor_writes():
    cache, llm = MemoryCache(), ScriptedLlm(["Ninety days [1]."])
    svc = service(RecordingRetriever([hit(1)]), llm, cache=cache)
    run(svc, ALICE, question="How often?", cache=False)
    assert cache.entries == {}
    run(svc, ALICE, question="How often?")
    assert not done_of(run(svc, ALICE, question="How often?", cache=False)).cached
    assert len(llm.prompts) == 3


def test_timings_account_for_each_phase():
    ticks = iter(range(0, 1000, 5))  # every timer read is 5 ms after the last
    svc = service(RecordingRetriever([hit(1)]), ScriptedLlm(["a", "b"]), timer=lambda: next(ticks) / 1000)
    timings = done_of(run(svc, ALICE, question="q")).timings
    assert timings.condense_ms == 5 and timings.retrieval_ms == 5 and timings.assembly_ms == 5
    assert 0 < timings.first_token_ms < timings.total_ms
    assert timings.total_ms == pytest.approx(
        timings.condense_ms + timings.retrieval_ms + timings.assembly_ms + timings.generation_ms
    )


def test_history_and_sources_together_fit_the_window():
    history = [turn(n, 60) for n in range(1, 6)]
    hits = [hit(n, text=f"passage {n} " + "detail " * 120) for n in range(1, 15)]
    prompt = build_prompt("and then?", hits, context_window=2048, max_tokens=256, history=history)
    used = sum(estimate_tokens(m["content"]) + 4 for m in prompt.messages)
    assert any(m["role"] == "assistant" for m in prompt.messages) and len(prompt.citations) >= 2
    assert used <= 2048 - 256


class FirstMisses(RecordingRetriever):
    """Finds nothing for the condensed question, as happens when a weak rewrite drops the subject."""

    def search(self, principal, request):
        if request.query == "What is the hinge made of?":
            self.calls.append((principal, request))
            return SearchResponse(hits=[], no_answer=True)
        return super().search(principal, request)


def test_a_rewrite_that_finds_nothing_is_retried_with_both_questions():
    retriever = FirstMisses([hit(1)])
    llm = Replies(["A foldable tablet [1]."], ["What is the hinge made of?"], ["Steel [1]."])
    svc = service(retriever, llm)
    first = done_of(run(svc, ALICE, question="What is Orchid?"))

    events = run(svc, ALICE, question="What is its hinge made of?", conversation_id=first.conversation_id)

    assert [request.query for _, request in retriever.calls[1:]] == [
        "What is the hinge made of?",
        "What is Orchid? What is its hinge made of?",
    ]
    assert (
        text_of(events) == "Steel [1]."
        and done_of(events).standalone_question == "What is the hinge made of?"
    )
