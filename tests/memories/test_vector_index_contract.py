"""One contract for memory search, run against both engines.

- `local`: the exact cosine engine over the emulator's items (`make dev`, the tests);
- `dynamodb`: the production adapter calling `SearchVectors` on a real botocore DynamoDB client whose
  calls go through `Stubber`, so every request and every response is validated against botocore's
  service model. No emulator implements `SearchVectors`, so the stubbed answers are the reference
  engine's over the same items; what this proves is the adapter's side (request shape, parsing,
  owner re-check, consistent confirmation of hits).
- `live`: the same contract on a real table with the vector index, only when
  `CHAT_LIVE_VECTOR_TABLE` names one (opt-in; it costs money and needs credentials).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from chatcore.memories.embedders import LocalHashEmbedder
from chatcore.memories.store import MemoryStore, memory_pk, vector_attribute
from chatcore.memories.vector_index import MAX_TOP_K, LocalVectorEngine, MemoryIndex, ValidationException

EMBEDDER = LocalHashEmbedder(256)
LIVE_TABLE = os.environ.get("CHAT_LIVE_VECTOR_TABLE")


def vec(text: str) -> list[float]:
    return asyncio.run(EMBEDDER.embed([text]))[0]


class StubbedSearch:
    """`search_vectors` on a real botocore client with Stubber active; answers from the reference engine."""

    def __init__(self, reference: LocalVectorEngine) -> None:
        self.reference = reference
        self.client = boto3.session.Session().client("dynamodb", region_name="us-east-1",
                                                     aws_access_key_id="x", aws_secret_access_key="y")
        self.stubber = Stubber(self.client)
        self.stubber.activate()
        self.requests: list[dict[str, Any]] = []

    def search_vectors(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        answer = self.reference.search_vectors(**request)
        self.stubber.add_response("search_vectors", answer, expected_params=request)  # validates the response
        result: dict[str, Any] = self.client.search_vectors(**request)  # validates the request
        self.stubber.assert_no_pending_responses()
        return result


@pytest.fixture(params=["local", "dynamodb", "live"])
def backend(request: pytest.FixtureRequest, memory_settings: Any, dynamodb: Any) -> Iterator[tuple[MemoryStore, MemoryIndex]]:
    settings = memory_settings()
    if request.param == "live":
        if not LIVE_TABLE:
            pytest.skip("set CHAT_LIVE_VECTOR_TABLE to a table with the `memories` vector index to run live")
        settings = dataclasses.replace(settings, table_name=LIVE_TABLE, dynamodb_endpoint_url=None)
        store = MemoryStore(settings)
        yield store, MemoryIndex(store, store.client, EMBEDDER.name, 256, confirm=True)
        return
    store = MemoryStore(settings, dynamodb)
    engine = LocalVectorEngine(dynamodb, settings.table_name, 256)
    if request.param == "local":
        yield store, MemoryIndex(store, engine, EMBEDDER.name, 256, confirm=False)
    else:
        yield store, MemoryIndex(store, StubbedSearch(engine), EMBEDDER.name, 256, confirm=True)


def remember(store: MemoryStore, user: str, text: str, model: str = EMBEDDER.name) -> str:
    return store.put(user, text, "fact", vec(text), model, "conv-1").id


def test_nearest_first_with_cosine_distance(backend: tuple[MemoryStore, MemoryIndex], new_user: Any) -> None:
    store, index = backend
    user = new_user()
    for text in ("my favourite colour is teal", "I live in Lisbon", "I am allergic to peanuts"):
        remember(store, user, text)
    hits = index.search(user, vec("what is my favourite colour"), 3)
    assert hits and hits[0].memory.text == "my favourite colour is teal"
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    exact = index.search(user, vec("I live in Lisbon"), 1)
    assert len(exact) == 1 and exact[0].memory.text == "I live in Lisbon" and abs(exact[0].distance) < 1e-4
    assert all(0.0 <= h.distance <= 2.0 for h in hits)


def test_top_k_bounds(backend: tuple[MemoryStore, MemoryIndex], new_user: Any) -> None:
    store, index = backend
    user = new_user()
    for n in range(5):
        remember(store, user, f"fact number {n} about apples")
    assert len(index.search(user, vec("apples"), 2)) == 2
    assert len(index.search(user, vec("apples"), 10)) == 5
    for bad in (0, MAX_TOP_K + 1):
        with pytest.raises(ValueError):
            index.search(user, vec("apples"), bad)


def test_query_vector_must_have_the_index_dimensions(backend: tuple[MemoryStore, MemoryIndex], new_user: Any) -> None:
    _, index = backend
    with pytest.raises(ValueError):
        index.search(new_user(), [0.1] * 255, 3)


def test_only_the_users_items_of_the_index_model_are_searched(backend: tuple[MemoryStore, MemoryIndex],
                                                              new_user: Any) -> None:
    store, index = backend
    alice, bob = new_user(), new_user()
    remember(store, alice, "I like green tea")
    remember(store, bob, "I like green tea")  # identical text, another user
    remember(store, alice, "I like green tea a lot", model="openai/text-embedding-3-small@256")
    # An item in Alice's partition without the index's user attribute (never written by the store).
    store.client.put_item(TableName=store.table, Item={
        "pk": {"S": memory_pk(alice)}, "sk": {"S": "MEM#m0000000000000000abcdef"}, "text": {"S": "stray"},
        "embedding": vector_attribute(vec("I like green tea")), "embedding_model": {"S": EMBEDDER.name}})
    hits = index.search(alice, vec("I like green tea"), 10)
    assert [h.memory.text for h in hits] == ["I like green tea"]
    assert all(h.memory.user_id == alice for h in hits)


def test_deleted_memories_are_never_returned(backend: tuple[MemoryStore, MemoryIndex], new_user: Any) -> None:
    store, index = backend
    user = new_user()
    gone = remember(store, user, "my cat is called Miso")
    remember(store, user, "my dog is called Rex")
    assert store.delete(user, gone)
    assert "my cat is called Miso" not in [h.memory.text for h in index.search(user, vec("my cat Miso"), 5)]


# --- the production adapter's own checks, on answers a correct index would never give ----------


def test_the_adapter_drops_foreign_and_deleted_results(memory_settings: Any, dynamodb: Any, new_user: Any) -> None:
    settings = memory_settings()
    store = MemoryStore(settings, dynamodb)
    alice, bob = new_user(), new_user()
    kept = remember(store, alice, "I play the cello")
    deleted = remember(store, alice, "I play the oboe")
    store.delete(alice, deleted)
    foreign = remember(store, bob, "I play the cello")
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1", aws_access_key_id="x",
                                            aws_secret_access_key="y")

    def result(user: str, memory_id: str, score: float) -> dict[str, Any]:
        return {"Item": {"pk": {"S": memory_pk(user)}, "sk": {"S": f"MEM#{memory_id}"}, "mem_user": {"S": user},
                         "text": {"S": "x"}, "embedding_model": {"S": EMBEDDER.name}}, "Score": score}

    with Stubber(client) as stubber:
        stubber.add_response("search_vectors", {"SearchResults": [result(bob, foreign, 0.0), result(alice, deleted, 0.1),
                                                                  result(alice, kept, 0.2)]})
        hits = MemoryIndex(store, client, EMBEDDER.name, 256, confirm=True).search(alice, vec("cello"), 3)
    assert [h.memory.id for h in hits] == [kept]


def test_the_local_engine_refuses_what_dynamodb_refuses(memory_settings: Any, dynamodb: Any) -> None:
    settings = memory_settings()
    engine = LocalVectorEngine(dynamodb, settings.table_name, 256)
    base = {"TableName": settings.table_name, "IndexName": "memories", "TopK": 3,
            "SearchVector": [{"N": "0.5"}] * 256, "SearchConditionExpression": "#u = :u",
            "ExpressionAttributeNames": {"#u": "mem_user"}, "ExpressionAttributeValues": {":u": {"S": "a"}}}
    assert engine.search_vectors(**base) == {"SearchResults": []}
    for bad in ({"SearchVector": [{"N": "0.5"}] * 3}, {"TopK": 0}, {"IndexName": "other"},
                {"SearchConditionExpression": "#u > :u"}, {"ExpressionAttributeNames": {"#u": "kind"}}):
        with pytest.raises(ValidationException):
            engine.search_vectors(**{**base, **bad})
