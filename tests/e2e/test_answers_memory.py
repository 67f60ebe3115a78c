"""Conversations and the answer cache on the real local platform: the bundled LLM, DynamoDB tables
in the local AWS emulator, the cache invalidated by the index's DocumentIndexed events."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.support.api import upload_indexed
from tests.support.sse import parse_sse

pytestmark = pytest.mark.e2e

SECRET_PLAN = """# Orchid launch plan

The Orchid launch moves to the second week of March because the supplier of the hinge assembly
missed its delivery. Only the board knows this date.
"""
PUBLIC_PLAN = """# Orchid launch plan (public)

The Orchid launch is planned for spring. Orchid is a foldable tablet with a steel hinge assembly.
"""
QUESTION = "When is the Orchid launch planned?"


def auth(platform, user: str, groups: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.token(user, groups)}"}


def ask(http: httpx.Client, headers: dict[str, str], question: str, **body) -> dict:
    response = http.post(
        "/v1/answers",
        json={"question": question, "max_tokens": 40, **body},
        headers={**headers, "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def orchid(platform, http) -> dict[str, str]:
    """A collection of its own (so other modules' uploads do not retire its answers) with a
    board-only plan and a public one."""
    collection = f"orchid-{uuid.uuid4().hex[:8]}"
    board = auth(platform, "olga", ["board", "staff"])
    assert http.post("/v1/collections", json={"name": collection}, headers=board).status_code in (200, 201)
    return {
        "collection": collection,
        "secret": upload_indexed(http, board, "Orchid plan", SECRET_PLAN, ["board"], collection=collection),
        "public": upload_indexed(
            http, board, "Orchid public plan", PUBLIC_PLAN, ["staff"], collection=collection
        ),
    }


def test_a_follow_up_continues_the_conversation_and_its_owner_can_read_it(platform, http, orchid):
    alice = auth(platform, f"alice-{uuid.uuid4().hex[:6]}", ["staff"])
    first = ask(http, alice, "What is Orchid?", collection=orchid["collection"])
    follow = ask(
        http,
        alice,
        "What is its hinge made of?",
        collection=orchid["collection"],
        conversation_id=first["conversation_id"],
    )

    assert (first["turn"], follow["turn"]) == (1, 2)
    assert follow["conversation_id"] == first["conversation_id"]
    # The model rewrote the follow-up for retrieval; whatever its words, it is recorded and used.
    assert follow["standalone_question"] and follow["standalone_question"] != "What is its hinge made of?"
    assert orchid["public"] in {c["document_id"] for c in follow["citations"]}, follow["standalone_question"]

    response = http.get(f"/v1/conversations/{first['conversation_id']}", headers=alice)
    assert response.status_code == 200, response.text
    turns = response.json()["turns"]
    assert [t["question"] for t in turns] == ["What is Orchid?", "What is its hinge made of?"]
    assert [t["answer"] for t in turns] == [first["answer"], follow["answer"]]
    assert turns[1]["citations"] == follow["citations"]

    mallory = auth(platform, "mallory", ["staff"])
    stolen = http.get(f"/v1/conversations/{first['conversation_id']}", headers=mallory)
    assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "conversation_not_found"
    continued = http.post(
        "/v1/answers",
        json={"question": "And?", "conversation_id": first["conversation_id"]},
        headers={**mallory, "Accept": "application/json"},
    )
    assert continued.status_code == 404


def test_a_cached_answer_never_reaches_someone_who_cannot_see_its_sources(platform, http, orchid):
    board = auth(platform, "bea", ["board", "staff"])
    board_twin = auth(platform, "bert", ["board", "staff"])  # the same visibility as bea
    staff = auth(platform, "sam", ["staff"])
    collection = orchid["collection"]

    fresh = ask(http, board, QUESTION, collection=collection)
    assert not fresh["cached"] and orchid["secret"] in {c["document_id"] for c in fresh["citations"]}

    twin = ask(http, board_twin, QUESTION, collection=collection)
    assert twin["cached"], "the same question over the same visible sources is served from the cache"
    assert (twin["answer"], twin["citations"]) == (fresh["answer"], fresh["citations"])
    assert twin["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}

    outsider = ask(http, staff, QUESTION, collection=collection)
    assert not outsider["cached"]
    assert orchid["secret"] not in {c["document_id"] for c in outsider["citations"]}
    assert "March" not in outsider["answer"]  # the board-only date stays with the board
    # And the outsider's own answer is now cached for people who see what they see.
    assert ask(http, auth(platform, "sue", ["staff"]), QUESTION, collection=collection)["cached"]


def test_the_streamed_cached_answer_replays_the_same_events_marked_cached(platform, http, orchid):
    board = auth(platform, "bo", ["board"])
    question = "Why did the Orchid launch move?"
    first = ask(http, board, question, collection=orchid["collection"])
    with http.stream(
        "POST",
        "/v1/answers",
        json={"question": question, "max_tokens": 40, "collection": orchid["collection"]},
        headers={**board, "Accept": "text/event-stream"},
    ) as response:
        events = list(parse_sse(response.iter_lines()))
    names = [name for name, _ in events]
    assert names[-2:] == ["citations", "done"] and names.count("token") >= 1
    assert "".join(payload["text"] for name, payload in events if name == "token") == first["answer"]
    assert events[-1][1]["cached"] is True


def test_indexing_a_document_in_the_collection_retires_its_cached_answers(platform, http, orchid):
    board = auth(platform, "bianca", ["board", "staff"])
    collection = orchid["collection"]
    question = "Who supplies the Orchid hinge assembly?"
    ask(http, board, question, collection=collection)
    assert ask(http, board, question, collection=collection)["cached"]

    upload_indexed(
        http,
        board,
        "Orchid supplier",
        "# Supplier\n\nThe Orchid hinge assembly is supplied by Kestrel Metalworks.",
        ["staff"],
        collection=collection,
    )
    # DocumentIndexed reaches the context's cache queue asynchronously, just after the status.
    deadline = time.monotonic() + 30
    while (answer := ask(http, board, question, collection=collection))["cached"]:
        assert time.monotonic() < deadline, "the cache was not invalidated by DocumentIndexed"
        time.sleep(0.2)
    assert not answer["cached"]
