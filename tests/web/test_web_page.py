"""devtools.web_page: the dev server's hook that serves the built chat page at `/`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from chatcore.api.app import create_app

from devtools import web_page
from tests.conftest import settings_for_tests


def test_the_page_is_served_at_root_and_every_api_route_still_wins(
        serve_asgi: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><div id=root></div>", encoding="utf-8")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "app.js").write_text("console.log(1)", encoding="utf-8")
    monkeypatch.setattr(web_page, "ensure_built", lambda: tmp_path)
    app = create_app(settings_for_tests())
    web_page.serve_web_page(app, "http://127.0.0.1:9999")
    assert "Chat page: http://127.0.0.1:9999/" in capsys.readouterr().out
    base = serve_asgi(app)

    page = httpx.get(f"{base}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<div id=root>" in page.text
    assert httpx.get(f"{base}/assets/app.js", timeout=30).text == "console.log(1)"
    assert httpx.get(f"{base}/healthz", timeout=30).json() == {"status": "ok"}
    assert httpx.get(f"{base}/v1/models", timeout=30).json()["object"] == "list"
    chat = httpx.post(f"{base}/api/chat/sse", timeout=30, json={"messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200 and chat.text.endswith("data: [DONE]\n\n")
    assert httpx.get(f"{base}/no-such-file", timeout=30).status_code == 404


def test_without_a_build_or_npm_the_api_runs_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(web_page, "DIST_DIR", tmp_path / "dist")
    monkeypatch.setattr(web_page.shutil, "which", lambda name: None)
    app = create_app(settings_for_tests())
    routes = len(app.routes)
    web_page.serve_web_page(app, "http://127.0.0.1:9999")
    assert len(app.routes) == routes
    assert "npm not found" in capsys.readouterr().out


def test_the_build_stamp_follows_the_sources() -> None:
    digest = web_page.source_digest()
    assert digest == web_page.source_digest() and len(digest) == 64
    assert digest != web_page.lock_digest()
