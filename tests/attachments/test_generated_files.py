"""Files a model generates (issue 16 item 7), through the app on a real socket: `mock/image` returns a
PNG; the stream carries a `file` chunk whose presigned URL serves the same bytes, the stored assistant
message holds only a reference, and the history API returns it with a fresh URL. (Without a bucket:
tests/conversations/test_generated_files_without_bucket.py.)"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatcore.conversations.store import ConversationStore, conversation_pk
from chatcore.providers.mock import mock_png

from tests.attachments.conftest import FileApp

HARNESS = Path(__file__).resolve().parents[1] / "aisdk"
NODE = shutil.which("node")


def ask(url: str, user: str, conversation: str | None, message_id: str, model: str = "mock/image",
        text: str = "Draw something") -> httpx.Response:
    body: dict[str, Any] = {"model": model,
                            "messages": [{"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}]}
    if conversation is not None:
        body["id"] = conversation
    return httpx.post(f"{url}/api/chat", json=body, headers={"x-test-user": user}, timeout=60)


def chunks(response: httpx.Response, sse_data: Callable[[bytes], list[str]]) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(d) for d in sse_data(response.content) if d != "[DONE]"]


def stored_items(store: ConversationStore, user: str, conversation: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = store.client.query(
        TableName=store.table, KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
        ExpressionAttributeValues={":pk": {"S": conversation_pk(user, conversation)}, ":m": {"S": "M#"}})["Items"]
    return items


def test_a_generated_image_streams_as_a_presigned_url_and_the_history_keeps_a_reference(
        file_app: Callable[..., FileApp], user: str, sse_data: Callable[[bytes], list[str]]) -> None:
    app = file_app()
    stream = chunks(ask(app.url, user, "g1", "m1"), sse_data)
    [file_chunk] = [c for c in stream if c["type"] == "file"]
    assert set(file_chunk) == {"type", "mediaType", "url"} and file_chunk["mediaType"] == "image/png"
    assert file_chunk["url"].startswith("http") and not file_chunk["url"].startswith("data:")
    # The chunk sits inside the step, after the text, before the finish.
    kinds = [c["type"] for c in stream]
    assert kinds.index("text-end") < kinds.index("file") < kinds.index("finish-step") < kinds.index("finish")
    served = httpx.get(file_chunk["url"], timeout=30)
    assert served.status_code == 200 and served.content == mock_png(0)
    assert served.headers["content-type"] == "image/png"

    # The history: the assistant message's file part with a fresh URL serving the same bytes.
    history = httpx.get(f"{app.url}/api/conversations/g1", headers={"x-test-user": user}, timeout=30).json()
    assistant = history["messages"][-1]
    assert assistant["role"] == "assistant"
    [part] = [p for p in assistant["parts"] if p["type"] == "file"]
    assert part["mediaType"] == "image/png" and part["fileId"].startswith("f_")
    assert part["size"] == len(mock_png(0)) and len(part["sha256"]) == 64
    assert httpx.get(part["url"], timeout=30).content == mock_png(0)
    assert [p["text"] for p in assistant["parts"] if p["type"] == "text"] == ["Here is the image you asked for."]

    # The stored item: a reference, no bytes, no URL.
    [item] = [i for i in stored_items(app.store, user, "g1") if i["role"]["S"] == "assistant"]
    stored = json.loads(item["parts_json"]["S"])
    [reference] = [p for p in stored if p["type"] == "file"]
    assert set(reference) == {"type", "mediaType", "filename", "fileId", "size", "sha256"}
    raw = json.dumps(item)
    assert "base64" not in raw and base64.b64encode(mock_png(0)).decode()[:24] not in raw and "X-Amz" not in raw
    # The file is the caller's (found under their key), not anyone else's.
    assert app.files.get(user, part["fileId"]) is not None and app.files.get("someone-else", part["fileId"]) is None


def test_a_later_turn_tells_the_model_of_the_image_without_resending_it(
        file_app: Callable[..., FileApp], user: str, sse_data: Callable[[bytes], list[str]]) -> None:
    app = file_app()
    chunks(ask(app.url, user, "g2", "m1", model="mock/image?count=2&text=Two"), sse_data)
    later = ask(app.url, user, "g2", "m2", model="openai/gpt-test", text="Thanks")
    assert later.status_code == 200, later.text
    [body] = app.upstream.bodies
    assistant = next(m for m in body["messages"] if m["role"] == "assistant")
    assert assistant["content"] == "Two\n\n[image generated-1.png]\n\n[image generated-2.png]"
    assert "image_url" not in json.dumps(body)
    # Deleting the conversation deletes the generated files too.
    history = httpx.get(f"{app.url}/api/conversations/g2", headers={"x-test-user": user}, timeout=30).json()
    ids = [p["fileId"] for m in history["messages"] for p in m["parts"] if p["type"] == "file"]
    assert len(ids) == 2
    assert httpx.delete(f"{app.url}/api/conversations/g2", headers={"x-test-user": user}, timeout=30).status_code == 204
    assert all(app.files.get(user, f) is None and app.files.read_object(user, f, 10_000) is None for f in ids)


def test_the_client_may_send_the_generated_files_url_back_but_not_a_foreign_one(
        file_app: Callable[..., FileApp], user: str, sse_data: Callable[[bytes], list[str]]) -> None:
    app = file_app()
    [file_chunk] = [c for c in chunks(ask(app.url, user, "g3", "m1"), sse_data) if c["type"] == "file"]
    history = httpx.get(f"{app.url}/api/conversations/g3", headers={"x-test-user": user}, timeout=30).json()
    assistant_id = history["messages"][-1]["id"]

    def follow_up(url: str) -> httpx.Response:
        # What `useChat` sends next: the whole conversation, the assistant message with its file part.
        messages = [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Draw something"}]},
                    {"id": assistant_id, "role": "assistant", "parts": [
                        {"type": "text", "text": "Here is the image you asked for."},
                        {"type": "file", "mediaType": "image/png", "url": url}]},
                    {"id": "m2", "role": "user", "parts": [{"type": "text", "text": "Nice"}]}]
        return httpx.post(f"{app.url}/api/chat", json={"id": "g3", "model": "mock/echo", "messages": messages},
                          headers={"x-test-user": user}, timeout=60)

    assert follow_up(file_chunk["url"]).status_code == 200
    assert follow_up("https://example.com/cat.png").status_code == 400


def test_a_stateless_chat_with_a_bucket_still_streams_a_presigned_url(
        file_app: Callable[..., FileApp], user: str, sse_data: Callable[[bytes], list[str]]) -> None:
    app = file_app()
    [file_chunk] = [c for c in chunks(ask(app.url, user, None, "m1"), sse_data) if c["type"] == "file"]
    assert httpx.get(file_chunk["url"], timeout=30).content == mock_png(0)


def test_the_plain_sse_endpoint_carries_the_file_url(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    response = httpx.post(f"{app.url}/api/chat/sse", headers={"x-test-user": user}, timeout=60,
                          json={"model": "mock/image", "messages": [{"role": "user", "content": "Draw"}]})
    if response.status_code == 404:
        pytest.skip("no plain SSE route in this app")
    assert response.status_code == 200, response.text
    files = [json.loads(line[len("data: "):])["file"] for line in response.text.split("\n\n")
             if line.startswith("data: {\"file\"")]
    assert len(files) == 1 and httpx.get(files[0]["url"], timeout=30).content == mock_png(0)


@pytest.mark.node
@pytest.mark.skipif(NODE is None or not (HARNESS / "node_modules" / "ai").is_dir(),
                    reason="node and tests/aisdk/node_modules are needed (make setup)")
def test_the_ai_sdk_client_assembles_the_file_part_and_sends_it_back_on_the_next_turn(
        file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    args = [NODE or "node", str(HARNESS / "consume.mjs"), "--api", f"{app.url}/api/chat", "--model", "mock/image",
            "--text", "Draw a dot", "--text", "Thanks", "--body", json.dumps({}), "--timeout-ms", "90000"]
    script = (f"const f = globalThis.fetch; globalThis.fetch = (u, i = {{}}) => f(u, {{...i, headers: "
              f"{{...(i.headers || {{}}), 'x-test-user': {json.dumps(user)}}}}});")
    done = subprocess.run([args[0], "--import", f"data:text/javascript,{script}", *args[1:]], cwd=HARNESS,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ready", result["error"]
    first_answer = result["messages"][1]
    [part] = [p for p in first_answer["parts"] if p["type"] == "file"]
    assert part["mediaType"] == "image/png" and httpx.get(part["url"], timeout=30).content == mock_png(0)
    assert [m["role"] for m in result["messages"]] == ["user", "assistant", "user", "assistant"]
