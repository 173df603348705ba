"""Tool calls on the chat page, from the AI SDK's own part types: the backend has no tools yet, so
the browser's requests to `/api/chat` are answered by recorded UI message streams (everything
else still goes to the real backend)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.browser

CORS = {"access-control-allow-origin": "*", "access-control-allow-headers": "*",
        "access-control-allow-methods": "POST, OPTIONS"}


def stream(*chunks: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


ASKS_APPROVAL = stream(
    {"type": "start", "messageId": "answer-1"},
    {"type": "start-step"},
    {"type": "tool-input-start", "toolCallId": "call-1", "toolName": "get_weather"},
    {"type": "tool-input-delta", "toolCallId": "call-1", "inputTextDelta": '{"city": "Par'},
    {"type": "tool-input-delta", "toolCallId": "call-1", "inputTextDelta": 'is"}'},
    {"type": "tool-input-available", "toolCallId": "call-1", "toolName": "get_weather", "input": {"city": "Paris"}},
    {"type": "tool-approval-request", "approvalId": "approval-1", "toolCallId": "call-1"},
    {"type": "finish-step"},
    {"type": "finish", "finishReason": "tool-calls"},
)

RUNS_THE_TOOL = stream(
    {"type": "start", "messageId": "answer-1"},
    {"type": "start-step"},
    {"type": "tool-output-available", "toolCallId": "call-1", "output": {"celsius": 21, "sky": "clear"}},
    {"type": "finish-step"},
    {"type": "start-step"},
    {"type": "text-start", "id": "t1"},
    {"type": "text-delta", "id": "t1", "delta": "It is **21 °C** in Paris."},
    {"type": "text-end", "id": "t1"},
    {"type": "finish-step"},
    {"type": "finish", "finishReason": "stop"},
)


def test_a_tool_call_is_a_card_that_asks_for_approval_and_shows_the_output(
        open_page: Callable[..., Any], shot: Callable[[Any, str], None]) -> None:
    page = open_page("mock/echo")
    bodies: list[dict[str, Any]] = []

    def answer(route: Any) -> None:
        if route.request.method == "OPTIONS":
            route.fulfill(status=204, headers=CORS)
            return
        bodies.append(json.loads(route.request.post_data))
        body = ASKS_APPROVAL if len(bodies) == 1 else RUNS_THE_TOOL
        route.fulfill(status=200, body=body, headers={**CORS, "content-type": "text/event-stream"})

    page.route("**/api/chat", answer)
    box = page.get_by_role("textbox", name="Message")
    box.fill("Weather in Paris?")
    box.press("Enter")

    card = page.locator("details.tool-card")
    approve = card.get_by_role("button", name="Approve")
    approve.wait_for()
    shot(page, "approval-requested")
    assert "get_weather" in card.locator("summary").inner_text()
    assert "waiting for your approval" in card.locator("summary").inner_text()
    assert json.loads(card.locator(".tool-json").first.inner_text()) == {"city": "Paris"}
    assert card.get_by_role("button", name="Deny").is_visible()

    approve.click()
    page.locator("article[data-role='assistant'] strong").wait_for()
    shot(page, "tool-output")
    # The approval went back to the server in the assistant message, and the answer went on.
    assert len(bodies) == 2
    tool_part = next(p for p in bodies[1]["messages"][-1]["parts"] if p["type"] == "tool-get_weather")
    assert tool_part["state"] == "approval-responded" and tool_part["approval"]["approved"] is True
    assert "done" in card.locator("summary").inner_text()
    if card.get_attribute("open") is None:  # a finished call's card is collapsed: open it
        card.locator("summary").click()
    assert json.loads(card.locator(".tool-json").nth(1).inner_text()) == {"celsius": 21, "sky": "clear"}
    assert page.locator("article[data-role='assistant'] strong").inner_text() == "21 °C"
