"""Files in chat turns: the AI SDK's own client sends a file part, the model gets its bytes in the
provider's format, the history holds a reference with a fresh URL, and nothing else is fetched."""

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
from chatcore.conversations.store import conversation_pk

from tests.attachments.conftest import PDF, FileApp, data_url, png

HARNESS = Path(__file__).resolve().parents[1] / "aisdk"
NODE = shutil.which("node")


def chat(app: FileApp, user: str, conversation: str, message_id: str, text: str, files: list[dict[str, Any]],
         model: str = "openai/gpt-test") -> httpx.Response:
    parts = [*files, {"type": "text", "text": text}]
    body = {"id": conversation, "model": model, "messages": [{"id": message_id, "role": "user", "parts": parts}]}
    return httpx.post(f"{app.url}/api/chat", json=body, headers={"x-test-user": user}, timeout=60)


def image_urls(body: dict[str, Any]) -> list[str]:
    return [p["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list)
            for p in m["content"] if p["type"] == "image_url"]


@pytest.mark.node
@pytest.mark.skipif(NODE is None or not (HARNESS / "node_modules" / "ai").is_dir(),
                    reason="node and tests/aisdk/node_modules are needed (make setup)")
def test_the_ai_sdk_client_sends_an_image_that_reaches_openai_and_the_history_serves_it(
        file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    image = png(3, 2)
    files = [{"type": "file", "mediaType": "image/png", "filename": "dot.png", "url": data_url("image/png", image)}]
    args = [NODE or "node", str(HARNESS / "consume.mjs"), "--api", f"{app.url}/api/chat", "--model", "openai/gpt-test",
            "--text", "What is in this image?", "--files", json.dumps(files),
            "--body", json.dumps({}), "--timeout-ms", "90000"]
    # The SDK's transport sends the chat id; the test authenticator reads the user from a header.
    script = (f"const f = globalThis.fetch; globalThis.fetch = (u, i = {{}}) => f(u, {{...i, headers: "
              f"{{...(i.headers || {{}}), 'x-test-user': {json.dumps(user)}}}}});")
    done = subprocess.run([args[0], "--import", f"data:text/javascript,{script}", *args[1:]], cwd=HARNESS,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ready", result["error"]
    assert result["messages"][-1]["parts"][-1]["text"] == "I see it."
    # The model received the same bytes as an image_url data URL, with the text.
    [body] = app.upstream.bodies
    assert image_urls(body) == [data_url("image/png", image)]
    assert {"type": "text", "text": "What is in this image?"} in body["messages"][-1]["content"]
    # The history returns a reference (no bytes) whose fresh URL serves the same bytes.
    conversation = result["requests"][0]["id"]
    history = httpx.get(f"{app.url}/api/conversations/{conversation}", headers={"x-test-user": user}, timeout=30).json()
    part = history["messages"][0]["parts"][0]
    assert part["type"] == "file" and part["fileId"].startswith("f_") and part["size"] == len(image)
    assert httpx.get(part["url"], timeout=30).content == image
    item = next(i for i in app.store.client.query(
        TableName=app.store.table, KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
        ExpressionAttributeValues={":pk": {"S": conversation_pk(user, conversation)}, ":m": {"S": "M#"}})["Items"]
        if i["role"]["S"] == "user")
    assert "base64" not in item["parts_json"]["S"]


def test_a_stored_reference_is_resent_on_later_turns_and_a_pdf_goes_as_a_file_part(
        file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    image = png()
    first = chat(app, user, "c1", "m1", "Look", [{"type": "file", "mediaType": "image/png", "filename": "a.png",
                                                  "url": data_url("image/png", image)}])
    assert first.status_code == 200, first.text
    second = chat(app, user, "c1", "m2", "And this?", [{"type": "file", "mediaType": "application/pdf",
                                                         "filename": "report.pdf", "url": data_url("application/pdf", PDF)}])
    assert second.status_code == 200, second.text
    body = app.upstream.bodies[-1]
    assert image_urls(body) == [data_url("image/png", image)]  # loaded from S3 for the replay
    [pdf] = [p for p in body["messages"][-1]["content"] if p["type"] == "file"]
    assert pdf == {"type": "file", "file": {"filename": "report.pdf", "file_data": data_url("application/pdf", PDF)}}


def test_the_replay_budget_turns_older_attachments_into_stubs(file_app: Callable[..., FileApp], user: str) -> None:
    image = png(40, 40)
    app = file_app(attachments_replay_bytes=len(image) // 2)
    for n in range(2):
        answer = chat(app, user, "c2", f"m{n}", f"Turn {n}", [{"type": "file", "mediaType": "image/png",
                                                               "filename": f"shot{n}.png",
                                                               "url": data_url("image/png", image)}])
        assert answer.status_code == 200, answer.text
    body = app.upstream.bodies[-1]
    assert len(image_urls(body)) == 1  # only the newest turn's image
    assert body["messages"][0]["content"] == "Turn 0\n\n[image shot0.png omitted]"


def test_a_foreign_url_is_400_and_nothing_is_fetched(file_app: Callable[..., FileApp], user: str,
                                                     serve_asgi: Callable[..., str]) -> None:
    hits: list[str] = []

    async def witness(scope: Any, receive: Any, send: Any) -> None:
        hits.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"\x89PNG"})

    elsewhere = serve_asgi(witness)
    app = file_app()
    for url in (f"{elsewhere}/cat.png", "https://example.com/cat.png", f"{elsewhere}/u/{user}/f_" + "0" * 32):
        answer = chat(app, user, "c3", "m1", "Look", [{"type": "file", "mediaType": "image/png", "url": url}])
        assert answer.status_code == 400, answer.text
    assert hits == [] and app.upstream.bodies == []


def test_another_users_file_id_is_404(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    chat(app, user, "c4", "m1", "Mine", [{"type": "file", "mediaType": "image/png", "url": data_url("image/png", png())}])
    history = httpx.get(f"{app.url}/api/conversations/c4", headers={"x-test-user": user}, timeout=30).json()
    part = history["messages"][0]["parts"][0]
    for reference in ({"fileId": part["fileId"]}, {"url": part["url"]}):
        stolen = chat(app, "thief", "c5", "m1", "Theirs", [{"type": "file", "mediaType": "image/png", **reference}])
        assert stolen.status_code in (400, 404), stolen.text
    by_id = chat(app, "thief", "c5", "m1", "Theirs", [{"type": "file", "mediaType": "image/png",
                                                         "fileId": part["fileId"]}])
    assert by_id.status_code == 404
    # The owner may reuse it by URL (what the history API returned) or by id.
    assert chat(app, user, "c4", "m2", "Again", [{"type": "file", "mediaType": "image/png",
                                                   "url": part["url"]}]).status_code == 200


def test_inline_files_beyond_the_bound_are_413_and_wrong_bytes_415(file_app: Callable[..., FileApp],
                                                                   user: str) -> None:
    app = file_app(attachments_max_inline_bytes=1000)
    big = chat(app, user, "c6", "m1", "Big", [{"type": "file", "mediaType": "text/plain",
                                               "url": data_url("text/plain", b"a" * 1500)}])
    assert big.status_code == 413
    wrong = chat(app, user, "c6", "m1", "Wrong", [{"type": "file", "mediaType": "image/png",
                                                   "url": data_url("image/png", b"GIF89a" + b"\x00" * 20)}])
    assert wrong.status_code == 415


def test_a_large_inline_image_keeps_the_history_item_small(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    image = png(8, 8) + b"\x00" * 3_000_000  # trailing bytes after IEND: still a PNG by its header
    answer = chat(app, user, "c7", "m1", "Big one", [{"type": "file", "mediaType": "image/png",
                                                      "url": data_url("image/png", image)}])
    assert answer.status_code == 200, answer.text
    [stored] = [m for m in app.store.iter_messages(user, "c7") if m.role == "user"]
    assert len(json.dumps(stored.parts)) < 1000  # far under the 300 KB item cap
    assert base64.b64decode(image_urls(app.upstream.bodies[-1])[0].split(",", 1)[1]) == image


def test_deployments_that_cannot_read_an_attachment_are_skipped_or_the_turn_is_a_400() -> None:
    from chatcore import errors
    from chatcore.routing.registry import Deployment
    from chatcore.routing.router import Route, Router

    text_only = Deployment(name="ollama-llama3.2", provider="ollama", model="llama3.2", vision=False, pdf=False)
    images_only = Deployment(name="llava", provider="ollama", model="llava", vision=True, pdf=False)
    both = Deployment(name="gpt", provider="openai", model="gpt", vision=True, pdf=True)
    route = Route("default", (text_only, images_only, both))
    assert Router.for_attachments(route, {"image/png"}).chain == (images_only, both)
    assert Router.for_attachments(route, {"application/pdf"}).chain == (both,)
    assert Router.for_attachments(route, {"text/plain"}).chain == route.chain
    with pytest.raises(errors.RequestError, match="application/pdf"):
        Router.for_attachments(Route("local", (text_only, images_only)), {"application/pdf"})


def test_deleting_a_conversation_deletes_its_files(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    chat(app, user, "c9", "m1", "Keep?", [{"type": "file", "mediaType": "image/png", "url": data_url("image/png", png())}])
    [message] = [m for m in app.store.iter_messages(user, "c9") if m.role == "user"]
    file_id = message.parts[0]["fileId"]  # type: ignore[index]
    assert app.files.read_object(user, file_id, 10_000) is not None
    assert httpx.delete(f"{app.url}/api/conversations/c9", headers={"x-test-user": user}, timeout=30).status_code == 204
    assert app.files.read_object(user, file_id, 10_000) is None
    assert app.files.get(user, file_id) is None
