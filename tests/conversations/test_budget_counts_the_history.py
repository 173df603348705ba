"""Token budgets count what is sent (the stored history, not just the request), and a refused
request stores nothing."""

from __future__ import annotations

from typing import Any

import httpx
from chatcore.conversations.store import StoredMessage
from chatcore.limits.limiter import DynamoDBLimiter
from chatcore.limits.policy import LimitPolicy, TierLimits

from tests.moto_dynamodb import client


def limiter(table: Any, tokens_per_minute: int) -> DynamoDBLimiter:
    limits = TierLimits(requests_per_minute=100, tokens_per_minute=tokens_per_minute, tokens_per_day=10**7,
                        concurrent_streams=5)
    return DynamoDBLimiter(table.name, LimitPolicy({"free": limits}), lambda: table.client, lease_ttl_s=60)


def test_a_short_message_on_a_long_conversation_is_charged_its_history(stored_app_server: Any, user: str,
                                                                        table: Any) -> None:
    base, store = stored_app_server(limiter=limiter(table, 20_000), max_output_tokens=100)
    # 480k characters of stored history: the model's 32k-token window is sent in full, more than the
    # minute's 20k budget (the 2-character request alone would be about 100 tokens).
    store.import_messages(user, "long", [
        StoredMessage(id=f"m{n}", role="user" if n % 2 == 0 else "assistant", text="lorem ipsum " * 2_000)
        for n in range(20)])
    before = [m.id for m in store.iter_messages(user, "long")]
    response = httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, timeout=60, json={
        "id": "long", "messages": [{"id": "short", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]})
    assert response.status_code == 400, response.text
    assert "more than your plan allows" in response.json()["error"]["message"]
    assert [m.id for m in store.iter_messages(user, "long")] == before  # the refused turn stored nothing
    # The refusal held nothing: the whole minute budget is left for the next request.
    ok = httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, timeout=60, json={
        "id": "short-one", "messages": [{"id": "s1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]})
    assert ok.status_code == 200
    reserved = int(ok.headers["x-ratelimit-limit-tokens"]) - int(ok.headers["x-ratelimit-remaining-tokens"])
    assert reserved < 200  # only this request's own reservation (its prompt and 100 output tokens)


def test_the_charge_is_the_prompt_actually_sent(stored_app_server: Any, user: str, table: Any) -> None:
    base, store = stored_app_server(limiter=limiter(table, 100_000), max_output_tokens=100)
    store.import_messages(user, "long", [
        StoredMessage(id=f"m{n}", role="user" if n % 2 == 0 else "assistant", text="lorem ipsum " * 2_000)
        for n in range(20)])
    response = httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, timeout=60, json={
        "id": "long", "messages": [{"id": "short", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]})
    assert response.status_code == 200
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 100_000 - 30_000  # the fitted window, not 105


def test_with_ample_budget_a_longer_history_costs_no_third_limits_write(stored_app_server: Any, user: str,
                                                                          table: Any) -> None:
    """The history makes the turn larger than the request showed, but the admission saw room for
    every stream the user may open to take that much more: the top-up is not written, the turn costs
    two limits writes (admit, settle), and the settlement charges what the model reported."""
    dynamodb = client()
    sent: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: sent.append(model.name))
    limits = TierLimits(requests_per_minute=100, tokens_per_minute=10**6, tokens_per_day=10**7,
                        concurrent_streams=5)
    limiter = DynamoDBLimiter(table.name, LimitPolicy({"free": limits}), lambda: dynamodb, lease_ttl_s=60)
    base, store = stored_app_server(limiter=limiter, max_output_tokens=100)
    store.import_messages(user, "long", [
        StoredMessage(id=f"m{n}", role="user" if n % 2 == 0 else "assistant", text="lorem ipsum " * 200)
        for n in range(10)])  # about 6,000 tokens of history behind a 2-character request
    response = httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, timeout=60, json={
        "id": "long", "messages": [{"id": "short", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]})
    assert response.status_code == 200, response.text
    assert sent == ["UpdateItem", "UpdateItem"]  # the limiter's only requests: admit and settle
    answer = list(store.iter_messages(user, "long"))[-1]
    assert answer.role == "assistant" and answer.usage is not None
    used = (answer.usage["inputTokens"] or 0) + (answer.usage["outputTokens"] or 0)
    assert used > 5_000  # the history was sent, not just the request
    item = table.item(f"USER#{user}#LIMITS", "LIMITS") or {}
    windows = {name[:2]: int(value["N"]) for name, value in item.items() if name[:2] in ("mt", "dt")}
    assert windows == {"mt": used, "dt": used}
    # The header counts the unwritten top-up: the whole turn's reservation, history included.
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 10**6 - 5_000
