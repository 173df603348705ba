"""The conversation list stays newest first while a user keeps chatting in the conversation at its
top, without moving that conversation's order key every turn (one index write fewer per turn): the
limits item records the key the user's latest turn moved a conversation to."""

from __future__ import annotations

from typing import Any

import httpx
from chatcore.conversations.store import ConversationStore, conversation_pk
from chatcore.limits.ledger import Admitted, LimitLedger
from chatcore.limits.limiter import DynamoDBLimiter
from chatcore.limits.policy import LimitPolicy, TierLimits


def limiter(table: Any) -> DynamoDBLimiter:
    limits = TierLimits(requests_per_minute=1000, tokens_per_minute=10**7, tokens_per_day=10**8,
                        concurrent_streams=5)
    return DynamoDBLimiter(table.name, LimitPolicy({"free": limits}), lambda: table.client, lease_ttl_s=60)


def turn(base: str, user: str, conversation: str, index: int) -> None:
    response = httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, timeout=60, json={
        "id": conversation, "messages": [{"id": f"{conversation}-{index}", "role": "user",
                                          "parts": [{"type": "text", "text": f"message {index}"}]}]})
    assert response.status_code == 200 and "[DONE]" in response.text


def order_key(store: ConversationStore, user: str, conversation: str) -> str:
    item = store.client.get_item(TableName=store.table, ConsistentRead=True,
                                 Key={"pk": {"S": conversation_pk(user, conversation)}, "sk": {"S": "META"}})["Item"]
    return str(item["gsi1sk"]["S"])


def listed(store: ConversationStore, user: str) -> list[str]:
    return [c.conversation_id for c in store.list_conversations(user)[0]]


def test_the_top_conversation_keeps_its_key_and_the_list_stays_newest_first(stored_app_server: Any, table: Any,
                                                                            user: str) -> None:
    base, store = stored_app_server(limiter=limiter(table))
    turn(base, user, "a", 0)
    turn(base, user, "b", 0)
    assert listed(store, user) == ["b", "a"]
    turn(base, user, "a", 1)  # "a" is not first: its key moves
    assert listed(store, user) == ["a", "b"]
    first = order_key(store, user, "a")
    for index in range(2, 5):  # "a" is first already: its key stays, the list is still right
        turn(base, user, "a", index)
        assert order_key(store, user, "a") == first
    meta = store.get_meta(user, "a")
    assert meta is not None and meta.message_count == 10 and meta.updated_at > first.split("#")[0]
    turn(base, user, "b", 1)
    assert listed(store, user) == ["b", "a"]
    turn(base, user, "a", 5)
    assert listed(store, user) == ["a", "b"] and order_key(store, user, "a") > first


def test_a_new_conversation_is_first_and_the_one_before_it_moves_again(stored_app_server: Any, table: Any,
                                                                       user: str) -> None:
    base, store = stored_app_server(limiter=limiter(table))
    turn(base, user, "a", 0)
    turn(base, user, "a", 1)
    turn(base, user, "c", 0)
    assert listed(store, user) == ["c", "a"]
    turn(base, user, "a", 2)
    assert listed(store, user) == ["a", "c"]


def test_the_settlement_records_only_a_later_key(table: Any) -> None:
    """Of two turns of one user settling out of order, the later move stays recorded."""
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=60)
    limits = TierLimits(requests_per_minute=100, tokens_per_minute=10**6, tokens_per_day=10**7, concurrent_streams=5)
    first = ledger.admit("carol", 1_000.0, 10, limits)
    second = ledger.admit("carol", 1_000.0, 10, limits)
    assert isinstance(first, Admitted) and isinstance(second, Admitted) and first.top is None
    ledger.settle("carol", second, 0, top="2026-12-01T10:00:02.000000Z#b")
    ledger.settle("carol", first, 0, top="2026-12-01T10:00:01.000000Z#a")  # earlier: not recorded
    third = ledger.admit("carol", 1_001.0, 10, limits)
    assert isinstance(third, Admitted) and third.top == "2026-12-01T10:00:02.000000Z#b"
    item = table.item("USER#carol#LIMITS", "LIMITS") or {}
    assert not any(name.startswith("l_") and name != f"l_{third.lease_id}" for name in item)  # both settled
