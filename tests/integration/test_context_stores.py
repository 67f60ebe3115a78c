"""Context's DynamoDB adapters against moto, on the tables the topology declares: the conversation
store (owner checks, the turn limit, expiry, racing appends) and the answer cache (generations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functions.context.adapters.answer_cache import DynamoAnswerCache
from functions.context.adapters.conversations import DynamoConversationStore
from functions.context.domain.errors import ConversationFull, ConversationNotFound
from functions.context.domain.ports import CachedAnswer, Owner
from ragline.contracts import Citation, ConversationTurn, Usage

from .conftest import AwsPlatform

CONVERSATION = "0123456789abcdef0123456789abcdef"
ALICE = Owner("alice", None)
TTL = timedelta(days=30)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(aws_platform: AwsPlatform, clock: Clock) -> DynamoConversationStore:
    return DynamoConversationStore(aws_platform.dynamodb, aws_platform.settings.conversations_table, clock)


@pytest.fixture
def cache(aws_platform: AwsPlatform, clock: Clock) -> DynamoAnswerCache:
    return DynamoAnswerCache(aws_platform.dynamodb, aws_platform.settings.answer_cache_table, 3600, clock)


def citation(marker: int = 1) -> Citation:
    return Citation(
        marker=marker,
        chunk_id=f"doc1#1#{marker}",
        document_id="doc1",
        version=1,
        ordinal=marker,
        title="Runbook",
        heading_path=["Deploys"],
        char_start=0,
        char_end=40,
    )


def turn(number: int, clock: Clock, answer: str = "Deploys run on Tuesdays [1].") -> ConversationTurn:
    return ConversationTurn(
        turn=number,
        question=f"question {number}",
        standalone_question=f"standalone question {number}" if number > 1 else None,
        answer=answer,
        citations=[citation()],
        finish_reason="stop",
        created_at=clock(),
    )


def append(store: DynamoConversationStore, t: ConversationTurn, clock: Clock, owner: Owner = ALICE, **kw):
    kw.setdefault("max_turns", 20)
    store.append(CONVERSATION, owner, t, expires_at=clock() + TTL, **kw)


def raw_item(p: AwsPlatform) -> dict[str, Any]:
    return p.dynamodb.get_item(
        TableName=p.settings.conversations_table, Key={"conversation_id": {"S": CONVERSATION}}
    )["Item"]


# -- conversations -----------------------------------------------------------------------------


def test_a_conversation_is_created_by_its_first_turn_and_grows(
    aws_platform: AwsPlatform, store: DynamoConversationStore, clock: Clock
):
    assert store.get(CONVERSATION) is None
    started = clock()
    first = turn(1, clock)
    append(store, first, clock)
    clock.advance(timedelta(minutes=5))
    second = turn(2, clock)
    append(store, second, clock)

    stored = store.get(CONVERSATION)
    assert stored is not None
    assert (stored.conversation_id, stored.owner, stored.turns) == (CONVERSATION, ALICE, [first, second])
    assert (stored.created_at, stored.updated_at, stored.expires_at) == (started, clock(), clock() + TTL)
    item = raw_item(aws_platform)
    owner_and_count = (item["owner_user"]["S"], item["owner_tenant"]["S"], item["turn_count"]["N"])
    assert owner_and_count == ("alice", "", "2")
    # The TTL attribute moved with the last turn.
    assert item["ttl"] == {"N": str(int((clock() + TTL).timestamp()))}


@pytest.mark.parametrize("intruder", [Owner("mallory", None), Owner("alice", "acme")])
def test_someone_elses_conversation_is_not_found_and_stays_as_it_was(
    aws_platform: AwsPlatform, store: DynamoConversationStore, clock: Clock, intruder: Owner
):
    append(store, turn(1, clock), clock)
    before = raw_item(aws_platform)

    with pytest.raises(ConversationNotFound):
        append(store, turn(2, clock), clock, owner=intruder)

    assert raw_item(aws_platform) == before


def test_a_tenants_conversation_is_not_found_by_the_same_user_without_the_tenant(
    store: DynamoConversationStore, clock: Clock
):
    append(store, turn(1, clock), clock, owner=Owner("alice", "acme"))
    append(store, turn(2, clock), clock, owner=Owner("alice", "acme"))
    with pytest.raises(ConversationNotFound):
        append(store, turn(3, clock), clock, owner=ALICE)
    assert store.get(CONVERSATION).owner == Owner("alice", "acme")


def test_a_conversation_holding_max_turns_is_full(
    aws_platform: AwsPlatform, store: DynamoConversationStore, clock: Clock
):
    append(store, turn(1, clock), clock, max_turns=2)
    append(store, turn(2, clock), clock, max_turns=2)
    before = raw_item(aws_platform)

    with pytest.raises(ConversationFull):
        append(store, turn(3, clock), clock, max_turns=2)
    # Someone else learns nothing, not even that it is full.
    with pytest.raises(ConversationNotFound):
        append(store, turn(3, clock), clock, owner=Owner("mallory", None), max_turns=2)
    assert raw_item(aws_platform) == before


def test_a_conversation_past_dynamodbs_item_limit_is_full(store: DynamoConversationStore, clock: Clock):
    append(store, turn(1, clock, answer="x" * 250_000), clock)
    with pytest.raises(ConversationFull):
        append(store, turn(2, clock, answer="y" * 250_000), clock)
    assert len(store.get(CONVERSATION).turns) == 1


class WithoutItemOnFailure:
    """A DynamoDB client (an emulator, say) that returns no item with a failed condition."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **kwargs: Any) -> Any:
        try:
            return self._client.update_item(**kwargs)
        except ClientError as exc:
            exc.response.pop("Item", None)
            raise


def test_without_the_refused_item_the_store_reads_it_to_tell_why(aws_platform: AwsPlatform, clock: Clock):
    store = DynamoConversationStore(
        WithoutItemOnFailure(aws_platform.dynamodb), aws_platform.settings.conversations_table, clock
    )
    append(store, turn(1, clock), clock, max_turns=1)
    with pytest.raises(ConversationFull):
        append(store, turn(2, clock), clock, max_turns=1)
    with pytest.raises(ConversationNotFound):
        append(store, turn(2, clock), clock, owner=Owner("mallory", None), max_turns=1)


def test_an_expired_conversation_is_gone_before_ttl_deletes_it(
    aws_platform: AwsPlatform, store: DynamoConversationStore, clock: Clock
):
    append(store, turn(1, clock), clock)
    clock.advance(TTL - timedelta(seconds=1))
    assert store.get(CONVERSATION) is not None
    clock.advance(timedelta(seconds=1))

    assert store.get(CONVERSATION) is None
    # Nor does its owner's next turn revive it.
    with pytest.raises(ConversationNotFound):
        append(store, turn(2, clock), clock)
    assert raw_item(aws_platform)["turn_count"] == {"N": "1"}


def test_interleaved_appends_both_land(aws_platform: AwsPlatform, clock: Clock):
    table = aws_platform.settings.conversations_table
    first, second = (DynamoConversationStore(aws_platform.dynamodb, table, clock) for _ in range(2))
    # Both requests read the (empty) history before either appends: both number their turn 1.
    assert first.get(CONVERSATION) is None and second.get(CONVERSATION) is None
    a, b = turn(1, clock, answer="from a"), turn(1, clock, answer="from b")
    append(first, a, clock)
    append(second, b, clock)

    assert first.get(CONVERSATION).turns == [a, b]
    assert raw_item(aws_platform)["turn_count"] == {"N": "2"}


# -- answer cache ------------------------------------------------------------------------------


def answer(text: str = "Tuesdays [1].") -> CachedAnswer:
    return CachedAnswer(
        tokens=[text[:5], text[5:]],
        citations=[citation(1), citation(2)],
        finish_reason="stop",
        usage=Usage(prompt_tokens=120, completion_tokens=7),
    )


def test_a_cached_answer_comes_back_as_it_was_put(cache: DynamoAnswerCache):
    scope = cache.scope("docs")
    assert scope == "docs#0"
    assert cache.get(scope, "key-1") is None
    cache.put(scope, "key-1", answer())
    assert cache.get(scope, "key-1") == answer()
    assert cache.get(scope, "key-2") is None


def test_invalidating_a_collection_hides_its_answers_and_the_all_collections_ones(cache: DynamoAnswerCache):
    docs, everything, other = cache.scope("docs"), cache.scope(None), cache.scope("other")
    assert (docs, everything, other) == ("docs#0", "*#0", "other#0")
    for scope in (docs, everything, other):
        cache.put(scope, "key", answer(scope))

    cache.invalidate("docs")

    assert (cache.scope("docs"), cache.scope(None), cache.scope("other")) == ("docs#1", "*#1", "other#0")
    assert cache.get(cache.scope("docs"), "key") is None
    assert cache.get(cache.scope(None), "key") is None
    assert cache.get(cache.scope("other"), "key") == answer(other)


def test_an_answer_built_before_an_invalidation_is_never_served_after_it(cache: DynamoAnswerCache):
    scope = cache.scope("docs")  # read before retrieval...
    cache.invalidate("docs")  # ...a document changes while the answer is generated...
    cache.put(scope, "key", answer())  # ...and the answer is stored under the generation it was built in
    assert cache.get(cache.scope("docs"), "key") is None


def test_an_expired_entry_is_a_miss(cache: DynamoAnswerCache, clock: Clock):
    scope = cache.scope(None)
    cache.put(scope, "key", answer())
    clock.advance(timedelta(seconds=3599))
    assert cache.get(scope, "key") == answer()
    clock.advance(timedelta(seconds=1))
    assert cache.get(scope, "key") is None


def test_a_cache_without_a_ttl_is_refused(aws_platform: AwsPlatform):
    with pytest.raises(ValueError):
        DynamoAnswerCache(aws_platform.dynamodb, aws_platform.settings.answer_cache_table, 0)
