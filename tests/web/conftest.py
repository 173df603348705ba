"""Fixtures for the browser tests of the example chat page (examples/web).

The backend is `make dev` itself (`python -m devtools.devserver`: the chat app, the mock provider,
the embedded DynamoDB) in a subprocess on 127.0.0.1; the built page is served by a second server
on another port, so every request the page makes is cross-origin, as against a deployed Function
URL. Chromium is Debian's (/usr/bin/chromium), driven by Playwright; nothing is downloaded. Each
test saves screenshots of its steps under artifacts/web/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools import web_page
from tests.conftest import STARTUP_TIMEOUT_S, ThreadedServer

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "web"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# What works on these machines: no sandbox as root, no GPU, and no background connections that
# the closed network would refuse.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing() -> str | None:
    if shutil.which("npm") is None:
        return "npm not found (Node.js 20.19+ builds examples/web)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (`make test` installs Debian's chromium when run as root)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (`make setup`)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under CI the setup installs everything: a missing piece fails the tests instead of skipping them.
    reason = None if os.environ.get("CI") == "true" else _missing()
    for item in items:
        if item.get_closest_marker("browser") and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def web_dist() -> Path:
    """examples/web built from its current sources (npm ci and vite build only when stale)."""
    if not web_page.is_current():
        web_page.build()
    return web_page.DIST_DIR


@pytest.fixture(scope="session")
def backend(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make dev` in a subprocess: its base URL. Serves the page at `/` too (the build is current)."""
    port = free_port()
    log = tmp_path_factory.mktemp("devserver") / "devserver.log"
    env = {**os.environ, "PORT": str(port), "LOCAL_DYNAMODB": "moto", "AUTH_MODE": "none", "LIMITS_ENABLED": "false",
           "MOCK_TTFT_MS": "50", "MOCK_PACE_MS": "10", "CORS_IN_APP": "true", "CORS_ALLOW_ORIGINS": "*",
           "PYTHONUNBUFFERED": "1"}
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "DYNAMODB_ENDPOINT_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                 "GEMINI_API_KEY", "OLLAMA_BASE_URL", "MODEL_REGISTRY_JSON", "MODEL_REGISTRY_FILE"):
        env.pop(name, None)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "devtools.devserver", "--port", str(port),
                                    "--log-level", "warning"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(int(STARTUP_TIMEOUT_S / 0.1)):
            if process.poll() is not None:
                break
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the dev server did not start")
        if process.poll() is not None:
            raise RuntimeError(f"the dev server exited: {log.read_text(errors='replace')[-3000:]}")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def page_origin(web_dist: Path) -> Iterator[str]:
    """The built page on its own origin (another port), like a static host."""
    from starlette.applications import Starlette
    from starlette.staticfiles import StaticFiles

    app = Starlette()
    app.mount("/", StaticFiles(directory=web_dist, html=True))
    server = ThreadedServer(app)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh, empty profile directory of its own.
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Any, str], None]:
    """`shot(page, "step")` saves artifacts/web/<test>-<n>-<step>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    counter = iter(range(1, 1000))

    def save(page: Any, step: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{name}-{next(counter):02d}-{step}.png"))

    return save


@pytest.fixture
def open_page(browser: Any, backend: str, page_origin: str) -> Iterator[Callable[..., Any]]:
    """`open_page(model=..., width=...)`: a new browser context on the page, pointed at the backend."""
    contexts: list[Any] = []

    def open_(model: str | None = None, *, width: int = 1200, height: int = 800, mode: str | None = None,
              color_scheme: str = "light") -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.page_errors = errors  # type: ignore[attr-defined]
        params = httpx.QueryParams({"backend": backend, **({"model": model} if model else {}),
                                    **({"mode": mode} if mode else {})})
        page.goto(f"{page_origin}/?{params}")
        return page

    yield open_
    for context in contexts:
        context.close()
