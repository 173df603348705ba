"""The example chat page in headless Chromium, served from another origin than the backend (`make dev`).

Each test drives the page as a person would (by role and accessible name) and checks what the
page shows, never how long it took. Screenshots of each step land in artifacts/web/.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.browser

ASSISTANT = "article[data-role='assistant']"

# Records, on every DOM change, the last answer's text and whether it is still streaming (the
# caret is on) or the typing indicator is up: the states a person sees, however fast they pass.
RECORD_STATES = """() => {
  window.__states = [];
  const take = () => {
    const answers = document.querySelectorAll("article[data-role='assistant']");
    const last = answers[answers.length - 1];
    window.__states.push({
      typing: !!document.querySelector("[aria-label='Assistant is typing']"),
      text: last ? last.querySelector(".bubble").innerText : "",
      streaming: !!(last && last.dataset.streaming === "true"),
    });
  };
  new MutationObserver(take).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                     attributes: true});
}"""


def send(page: Any, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def answer(page: Any) -> Any:
    """The last answer: its text (`.bubble`), its metadata line and its actions."""
    return page.locator(ASSISTANT).last


def answer_text(page: Any) -> str:
    return str(answer(page).locator(".bubble").inner_text())


# JavaScript: the last answer's text ("" when there is none yet).
LAST_TEXT = ("(() => { const a = [...document.querySelectorAll(\"article[data-role='assistant'] .bubble\")].pop();"
             " return a ? a.innerText : ''; })()")


def wait_until_done(page: Any) -> None:
    """The answer is over when Stop is disabled again (status ready or error)."""
    page.wait_for_function("() => document.querySelector('.composer button:nth-child(2)')?.disabled === true")


def test_the_dev_server_serves_the_page_at_root_and_answers_the_page_origin(backend: str, page_origin: str) -> None:
    page = httpx.get(f"{backend}/", timeout=30)
    assert page.status_code == 200 and '<div id="root">' in page.text
    preflight = httpx.options(f"{backend}/api/chat", timeout=30, headers={
        "origin": page_origin, "access-control-request-method": "POST",
        "access-control-request-headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in ("*", page_origin)
    models = httpx.get(f"{backend}/v1/models", timeout=30, headers={"origin": page_origin})
    assert models.headers["access-control-allow-origin"] in ("*", page_origin)
    assert "mock/echo" in [m["id"] for m in models.json()["data"]]


def test_tokens_render_incrementally_with_a_typing_indicator_then_a_caret(
        open_page: Callable[..., Any], shot: Callable[[Any, str], None]) -> None:
    page = open_page("mock/lorem?tokens=60&pace_ms=80&ttft_ms=600")
    shot(page, "empty")
    page.evaluate(RECORD_STATES)
    send(page, "Tell me something long")
    page.get_by_role("status", name="Assistant is typing").wait_for()
    shot(page, "typing")
    seen = 0
    for step in range(3):  # screenshots of the answer growing (the assertions use the recorded states)
        page.wait_for_function(
            "n => { const a = [...document.querySelectorAll(\"article[data-role='assistant']\")].pop();"
            f" return a && (a.dataset.streaming !== 'true' || {LAST_TEXT}.length > n); }}", arg=seen)
        if answer(page).get_attribute("data-streaming") != "true":
            break
        seen = len(answer_text(page))
        shot(page, f"streaming-{step}")
    wait_until_done(page)
    shot(page, "done")
    final = answer_text(page)
    assert final.startswith("Lorem ipsum") and len(final.split()) == 60
    states = page.evaluate("() => window.__states")
    streamed = [s["text"] for s in states if s["streaming"] and s["text"]]
    # Several distinct partial answers were on screen, each a prefix of the next, before the whole one.
    distinct = list(dict.fromkeys(streamed))
    assert len(distinct) >= 3, distinct
    assert all(final.startswith(text.rstrip("▋ \n").rstrip()) for text in distinct)
    assert any(s["typing"] for s in states[: states.index(next(s for s in states if s["text"]))])
    assert not states[-1]["streaming"] and not states[-1]["typing"]
    # The metadata line says who answered.
    assert "mock/lorem" in answer(page).get_by_test_id("message-metadata").inner_text()
    assert page.page_errors == []


def test_markdown_is_rendered_as_html(open_page: Callable[..., Any], shot: Callable[[Any, str], None]) -> None:
    page = open_page("mock/echo")
    send(page, "Make this **bold** and `code` please")
    strong = answer(page).locator("strong")
    strong.wait_for()
    wait_until_done(page)
    shot(page, "markdown")
    assert strong.inner_text() == "bold"
    assert answer(page).locator("code").inner_text() == "code"
    assert answer_text(page).startswith("You said: Make this bold")
    assert "**" not in answer_text(page)
    # The user's own text is shown as typed, not rendered.
    assert page.locator("article[data-role='user'] .bubble").last.inner_text() == "Make this **bold** and `code` please"


def test_stop_and_esc_keep_the_partial_answer(open_page: Callable[..., Any], shot: Callable[[Any, str], None]) -> None:
    page = open_page("mock/lorem?tokens=400&pace_ms=40")
    stop = page.get_by_role("button", name="Stop", exact=True)
    send_button = page.get_by_role("button", name="Send", exact=True)
    assert stop.is_disabled()
    send(page, "Go on and on")
    page.wait_for_function(f"() => {LAST_TEXT}.split(/\\s+/).length > 5")
    shot(page, "before-stop")
    stop.click()
    wait_until_done(page)
    shot(page, "stopped")
    partial = answer_text(page)
    assert partial.startswith("Lorem ipsum") and 5 <= len(partial.split()) < 400
    assert answer(page).get_attribute("data-streaming") is None
    assert page.get_by_role("alert").count() == 0
    # Esc stops too, and the first partial answer stays on screen.
    send(page, "Again")
    page.wait_for_function("() => document.querySelectorAll(\"article[data-role='assistant']\").length === 2"
                           f" && {LAST_TEXT}.split(/\\s+/).length > 5")
    page.keyboard.press("Escape")
    wait_until_done(page)
    shot(page, "stopped-by-esc")
    answers = page.locator(ASSISTANT)
    assert answers.count() == 2 and answers.first.locator(".bubble").inner_text() == partial
    assert len(answer_text(page).split()) < 400
    page.get_by_role("textbox", name="Message").fill("ready")
    assert send_button.is_enabled()


def test_a_429_shows_its_message_and_retry_time(open_page: Callable[..., Any],
                                               shot: Callable[[Any, str], None]) -> None:
    page = open_page("mock/fail-429")
    send(page, "Hello")
    alert = page.get_by_role("alert")
    alert.wait_for()
    shot(page, "rate-limited")
    text = alert.inner_text()
    assert "Rate limited (429)" in text
    assert "The mock provider failed with HTTP 429." in text
    assert "Retry in 1 s" in text
    assert page.get_by_role("button", name="Retry").is_visible()


def test_an_error_mid_stream_keeps_the_partial_text(open_page: Callable[..., Any],
                                                    shot: Callable[[Any, str], None]) -> None:
    page = open_page("mock/fail-after-4")
    send(page, "Hello")
    alert = page.get_by_role("alert")
    alert.wait_for()
    wait_until_done(page)
    shot(page, "error-mid-stream")
    assert "The mock provider failed mid-stream." in alert.inner_text()
    assert answer_text(page).startswith("Lorem ipsum dolor sit")


def test_reload_reopen_rename_and_delete_a_conversation(open_page: Callable[..., Any], backend: str,
                                                        shot: Callable[[Any, str], None]) -> None:
    marker = uuid.uuid4().hex[:8]
    page = open_page("mock/echo")
    send(page, f"Remember **{marker}**")
    answer(page).locator("strong").wait_for()
    wait_until_done(page)
    sidebar = page.get_by_role("navigation", name="Conversations")
    sidebar.get_by_role("button", name=f"Remember **{marker}**", exact=True).wait_for()
    page.reload()
    shot(page, "reloaded")
    assert page.locator(ASSISTANT).count() == 0
    sidebar.get_by_role("button", name=f"Remember **{marker}**", exact=True).click()
    restored = answer(page).locator("strong")
    restored.wait_for()
    shot(page, "reopened")
    assert restored.inner_text() == marker
    assert page.locator("article[data-role='user'] .bubble").inner_text() == f"Remember **{marker}**"
    assert "mock/echo" in answer(page).get_by_test_id("message-metadata").inner_text()

    # Rename, then delete (two clicks: the second confirms).
    sidebar.get_by_role("button", name=f"Rename Remember **{marker}**").click()
    sidebar.get_by_role("textbox", name="New title").fill(f"Kept {marker}")
    sidebar.get_by_role("textbox", name="New title").press("Enter")
    sidebar.get_by_role("button", name=f"Kept {marker}", exact=True).wait_for()
    shot(page, "renamed")
    sidebar.get_by_role("button", name=f"Delete Kept {marker}").click()
    sidebar.get_by_role("button", name=f"Confirm delete Kept {marker}").click()
    sidebar.get_by_role("button", name=f"Kept {marker}", exact=True).wait_for(state="detached")
    shot(page, "deleted")
    assert page.locator(ASSISTANT).count() == 0  # the open conversation was the deleted one
    listed = httpx.get(f"{backend}/api/conversations", params={"limit": 100}, timeout=30).json()["conversations"]
    assert marker not in str(listed)


def test_the_model_picker_lists_the_backend_models(open_page: Callable[..., Any]) -> None:
    page = open_page()
    picker = page.get_by_role("combobox", name="Model")
    page.wait_for_function("() => document.querySelectorAll('select option').length > 5")
    options = picker.locator("option").all_inner_texts()
    assert "mock/echo" in options and "demo-fallback" in options
    picker.select_option("demo-fallback")
    send(page, "Fall back please")
    expect(answer(page).get_by_test_id("message-metadata")).to_contain_text("fell back from mock-fail-529")
    assert "via mock-fast" in answer(page).get_by_test_id("message-metadata").inner_text()


def test_the_plain_sse_mode_streams_and_stops(open_page: Callable[..., Any],
                                              shot: Callable[[Any, str], None]) -> None:
    page = open_page("mock/lorem?tokens=400&pace_ms=40", mode="sse")
    send(page, "Hello over SSE")
    page.wait_for_function(f"() => {LAST_TEXT}.split(/\\s+/).length > 5")
    page.get_by_role("button", name="Stop", exact=True).click()
    wait_until_done(page)
    shot(page, "sse-stopped")
    partial = answer_text(page)
    assert partial.startswith("Lorem ipsum") and len(partial.split()) < 400
    page2 = open_page("mock/echo", mode="sse")
    send(page2, "**hi**")
    answer(page2).locator("strong").wait_for()
    assert answer_text(page2).startswith("You said: hi")


@pytest.mark.parametrize(("width", "scheme"), [(400, "dark"), (1200, "light")])
def test_the_layout_fits_narrow_and_wide_screens(open_page: Callable[..., Any], shot: Callable[[Any, str], None],
                                                 width: int, scheme: str) -> None:
    page = open_page("mock/echo", width=width, color_scheme=scheme)
    send(page, "A **short** answer, and a longer line of text that has to wrap on a narrow phone screen.")
    answer(page).locator("strong").wait_for()
    wait_until_done(page)
    shot(page, f"{width}px-{scheme}")
    for name in ("Send", "Stop"):
        box = page.get_by_role("button", name=name, exact=True).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    sidebar_visible = page.get_by_role("button", name="New conversation").is_visible()
    assert sidebar_visible == (width >= 1200)
    background = page.evaluate("() => getComputedStyle(document.documentElement).backgroundColor")
    assert (background == "rgb(21, 23, 26)") == (scheme == "dark")



def posts_to_chat(page: Any) -> list[dict[str, Any]]:
    """The bodies of the page's `POST /api/chat` requests, as they are sent."""
    posts: list[dict[str, Any]] = []
    page.on("request", lambda r: posts.append(r.post_data_json)
            if r.method == "POST" and r.url.endswith("/api/chat") else None)
    return posts


def edit_last_question(page: Any, text: str) -> None:
    page.locator("article[data-role='user']").last.get_by_role("button", name="Edit").click()
    page.get_by_role("textbox", name="Edit message").fill(text)
    page.get_by_role("button", name="Save and resend").click()


def test_edit_resends_the_last_question_in_place_and_regenerate_redoes_the_answer(
        open_page: Callable[..., Any], shot: Callable[[Any, str], None]) -> None:
    page = open_page("mock/echo")
    posts = posts_to_chat(page)
    send(page, "first question")
    expect(answer(page).locator(".bubble")).to_have_text("You said: first question")
    edit_last_question(page, "second question")
    expect(page.locator("article[data-role='user'] .bubble")).to_have_text("second question")
    expect(page.get_by_role("button", name="Regenerate")).to_be_visible()
    shot(page, "edited")
    assert page.locator(ASSISTANT).count() == 1
    # The AI SDK's edit: the same message id, the new text, nothing after it.
    assert posts[1]["trigger"] == "submit-message" and posts[1]["messageId"] == posts[0]["messages"][0]["id"]
    assert [(m["id"], m["parts"][0]["text"]) for m in posts[1]["messages"]] == [
        (posts[0]["messages"][0]["id"], "second question")]
    answer(page).get_by_role("button", name="Regenerate").click()
    expect(page.get_by_role("button", name="Regenerate")).to_be_visible()
    assert len(posts) == 3 and posts[2]["trigger"] == "regenerate-message"
    assert [m["role"] for m in posts[2]["messages"]] == ["user"]
    assert page.locator(ASSISTANT).count() == 1
    assert answer_text(page).startswith("You said:")


def test_an_edited_question_is_answered(open_page: Callable[..., Any]) -> None:
    page = open_page("mock/echo")
    send(page, "first question")
    expect(answer(page).locator(".bubble")).to_have_text("You said: first question")
    edit_last_question(page, "second question")
    expect(answer(page).locator(".bubble")).to_have_text("You said: second question")


def test_shift_enter_adds_a_line_and_enter_sends_both(open_page: Callable[..., Any]) -> None:
    page = open_page("mock/echo")
    posts = posts_to_chat(page)
    box = page.get_by_role("textbox", name="Message")
    box.type("line one")
    box.press("Shift+Enter")
    box.type("line two")
    assert box.input_value() == "line one\nline two" and posts == []
    box.press("Enter")
    expect(answer(page).locator(".bubble")).to_contain_text("line two")
    assert posts[0]["messages"][-1]["parts"][0]["text"] == "line one\nline two"
    assert box.input_value() == ""


@pytest.mark.parametrize(("status", "message", "headers", "shown"), [
    (401, "Missing API key.", {}, ["Not authorized (401)", "Missing API key.", "Settings"]),
    (503, "Every provider failed.", {}, ["Server error (503)", "Every provider failed."]),
    (429, "Too many requests.", {"x-ratelimit-reset": "@reset"}, ["Rate limited (429)", "Too many requests.", "Retry in"]),
])
def test_http_errors_are_said_plainly(open_page: Callable[..., Any], shot: Callable[[Any, str], None], status: int,
                                      message: str, headers: dict[str, str], shown: list[str]) -> None:
    page = open_page("mock/echo")
    if headers.get("x-ratelimit-reset") == "@reset":  # a limit that resets in 30 s, without Retry-After
        headers = {"x-ratelimit-reset": str(int(page.evaluate("Date.now() / 1000")) + 30)}

    def refuse(route: Any) -> None:
        cors = {"access-control-allow-origin": "*", "access-control-allow-headers": "*",
                "access-control-expose-headers": "*"}
        if route.request.method == "OPTIONS":
            route.fulfill(status=204, headers=cors)
        else:
            route.fulfill(status=status, headers={**cors, **headers, "content-type": "application/json"},
                          body=json.dumps({"error": {"code": "refused", "message": message}}))

    page.route("**/api/chat", refuse)
    send(page, "Hello")
    alert = page.get_by_role("alert")
    alert.wait_for()
    shot(page, f"http-{status}")
    for text in shown:
        assert text in alert.inner_text()
    if status == 429:
        seconds = int(alert.inner_text().split("Retry in ")[1].split(" s")[0])
        assert 25 <= seconds <= 30
