"""Over real sockets: 401 challenges, 429s with rate-limit headers, lease release on disconnect,
CORS emitted exactly once, and secrets never reaching clients or logs."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from chatcore.api.app import Components, default_components
from chatcore.auth.api_keys import ApiKeyAuthenticator, ApiKeyStore
from chatcore.errors import safe_message
from chatcore.limits.limiter import DynamoDBLimiter
from chatcore.limits.policy import LimitPolicy, TierLimits
from chatcore.providers import ProviderRegistry
from chatcore.settings import Settings

from tests.moto_dynamodb import Table

OK = {"messages": [{"role": "user", "content": "hi"}]}
ORIGIN = "https://app.example"
WAIT_S = 30.0  # bound on waiting for a background release; never a speed assertion


def base_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"stage": "test", "default_model": "mock/echo", "mock_ttft_ms": 0.0,
                              "mock_pace_ms": 0.0, "cors_in_app": False}
    values.update(overrides)
    return Settings(**values)


def guarded(table: Table, settings: Settings, *, clock: Callable[[], float] = time.time,
            **tier: int) -> tuple[Components, str]:
    """Components with API-key auth and DynamoDB limits on the test table, and a valid key."""
    store = ApiKeyStore(table.name, lambda: table.client)
    key, _ = store.create("carol", "free")
    limits = {"requests_per_minute": 100, "tokens_per_minute": 10**7, "tokens_per_day": 10**8,
              "concurrent_streams": 10, **tier}
    limiter = DynamoDBLimiter(table.name, LimitPolicy({"free": TierLimits(**limits)}), lambda: table.client,
                              lease_ttl_s=60, clock=clock)
    components = dataclasses.replace(default_components(settings, ProviderRegistry(settings)),
                                     authenticator=ApiKeyAuthenticator(store), limiter=limiter)
    return components, key


def test_missing_and_bad_credentials_get_401_json_with_a_challenge(table: Table, chat_server: Any) -> None:
    components, key = guarded(table, base_settings())
    base = chat_server(components=components)
    with httpx.Client(base_url=base, timeout=30) as http:
        missing = http.post("/api/chat", json=OK)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="chat"'
        assert missing.json()["error"]["code"] == "unauthorized"
        bad = http.post("/api/chat", json=OK, headers={"x-api-key": "cbk_" + "Z" * 43})
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == 'Bearer realm="chat", error="invalid_token"'
        assert bad.json()["error"]["code"] == "invalid_token"
        good = http.post("/api/chat", json=OK, headers={"authorization": f"Bearer {key}"})
        assert good.status_code == 200


def test_rate_limit_headers_and_429(table: Table, chat_server: Any) -> None:
    # The limiter's clock is frozen 20 s into a minute: the three requests share one fixed window
    # however slow the machine is (on the wall clock they could straddle a minute boundary).
    frozen = (time.time() // 60) * 60 + 20.0
    components, key = guarded(table, base_settings(), clock=lambda: frozen, requests_per_minute=2)
    base = chat_server(components=components)
    with httpx.Client(base_url=base, timeout=30, headers={"x-api-key": key}) as http:
        first, second, third = (http.post("/api/chat", json=OK) for _ in range(3))
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == ("2", "1")
    assert second.headers["x-ratelimit-remaining"] == "0"
    assert first.headers["x-ratelimit-reset"] == "40"  # seconds left in the frozen minute
    assert third.status_code == 429
    assert third.headers["content-type"] == "application/json"
    assert third.json()["error"]["code"] == "rate_limited"
    assert third.json()["error"]["limit"] == "requests_per_minute"
    assert third.headers["retry-after"] == "40"
    assert third.headers["x-ratelimit-remaining"] == "0" and third.headers["x-ratelimit-limit"] == "2"


def leases_held(table: Table, user: str) -> int:
    """The user's stream leases, in the one limits item of the user."""
    return table.number(f"USER#{user}#LIMITS", "LIMITS", "n")


def wait_for_no_leases(table: Table, user: str) -> int:
    deadline = time.monotonic() + WAIT_S
    while (held := leases_held(table, user)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return held


def test_stream_lease_is_released_on_completion_and_on_disconnect(table: Table, chat_server: Any) -> None:
    components, key = guarded(table, base_settings(), concurrent_streams=1)
    base = chat_server(components=components)
    slow = {**OK, "model": "mock/lorem?tokens=5000&pace_ms=5"}
    with httpx.Client(base_url=base, timeout=30, headers={"x-api-key": key}) as http:
        assert http.post("/api/chat", json=OK).status_code == 200
        # Settled before the final event was sent: free by the time the client has the whole answer.
        assert leases_held(table, "carol") == 0

        with http.stream("POST", "/api/chat", json=slow) as streaming:
            assert streaming.status_code == 200
            # Keep the iterator referenced: a discarded httpx iterator closes the connection.
            chunks = streaming.iter_bytes()
            next(chunks)  # the stream is live and holds the only slot
            busy = http.post("/api/chat", json=OK)
            assert busy.status_code == 429
            assert leases_held(table, "carol") == 1
            assert busy.json()["error"]["limit"] == "concurrent_streams"
        # Leaving the block closes the connection mid-stream: a client disconnect.
        assert wait_for_no_leases(table, "carol") == 0
        assert http.post("/api/chat", json=OK).status_code == 200


def test_failure_before_streaming_releases_the_lease(table: Table, chat_server: Any) -> None:
    components, key = guarded(table, base_settings(), concurrent_streams=1)
    base = chat_server(components=components)
    with httpx.Client(base_url=base, timeout=30, headers={"x-api-key": key}) as http:
        failed = http.post("/api/chat", json={**OK, "model": "mock/fail-500"})
        assert failed.status_code >= 500
        assert wait_for_no_leases(table, "carol") == 0
        assert http.post("/api/chat", json=OK).status_code == 200


# --- CORS: exactly one place per deployment -----------------------------------------------------


def test_cors_preflight_succeeds_in_app(chat_server: Any) -> None:
    base = chat_server(cors_in_app=True, cors_allow_origins=(ORIGIN,))
    with httpx.Client(base_url=base, timeout=30) as http:
        preflight = http.options("/api/chat", headers={
            "origin": ORIGIN, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization, x-api-key"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert all(name in allowed for name in ("content-type", "authorization", "x-api-key"))
        assert "POST" in preflight.headers["access-control-allow-methods"]

        actual = http.post("/api/chat", json=OK, headers={"origin": ORIGIN})
        assert actual.headers["access-control-allow-origin"] == ORIGIN
        assert "x-ratelimit-remaining" in actual.headers["access-control-expose-headers"]

        stranger = http.options("/api/chat", headers={"origin": "https://evil.example",
                                                      "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in stranger.headers


def test_errors_carry_cors_headers_so_browsers_can_read_them(chat_server: Any) -> None:
    base = chat_server(cors_in_app=True, cors_allow_origins=(ORIGIN,), max_body_bytes=100)
    with httpx.Client(base_url=base, timeout=30) as http:
        for response in (http.post("/api/chat", json={"messages": []}, headers={"origin": ORIGIN}),
                         http.post("/api/chat", json={"messages": [{"role": "user", "content": "x" * 500}]},
                                   headers={"origin": ORIGIN})):
            assert response.status_code in (400, 413)
            assert response.headers["access-control-allow-origin"] == ORIGIN


def test_no_cors_headers_when_the_function_url_owns_cors(chat_server: Any) -> None:
    base = chat_server(cors_in_app=False, cors_allow_origins=(ORIGIN,))
    with httpx.Client(base_url=base, timeout=30) as http:
        responses = [
            http.options("/api/chat", headers={"origin": ORIGIN, "access-control-request-method": "POST"}),
            http.post("/api/chat", json=OK, headers={"origin": ORIGIN}),
            http.post("/api/chat", json={"messages": []}, headers={"origin": ORIGIN}),
            http.get("/healthz", headers={"origin": ORIGIN}),
        ]
    for response in responses:
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_settings_put_cors_in_the_app_locally_and_not_in_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORS_IN_APP", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert Settings.from_env().cors_in_app is True
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "chat")
    assert Settings.from_env().cors_in_app is False


# --- hygiene: secrets never in responses or logs ---------------------------------------------------

PROVIDER_KEY = "sk-proj-Zq8SECRETxY7dK2mN4pL9vB3cR6tH1wE5"


class LeakyUpstream:
    """An OpenAI-compatible server whose errors echo the credentials it was sent, as some do."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                sent = self.headers.get("authorization", "")
                body = json.dumps({"error": {
                    "message": f"Incorrect API key provided: {sent.removeprefix('Bearer ')}. Header was '{sent}'.",
                    "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
                self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def leaky_upstream() -> Iterator[LeakyUpstream]:
    upstream = LeakyUpstream()
    yield upstream
    upstream.server.shutdown()


def test_secrets_never_reach_clients_or_logs(table: Table, chat_server: Any, leaky_upstream: LeakyUpstream,
                                             capfd: pytest.CaptureFixture[str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = base_settings(openai_api_key=PROVIDER_KEY, openai_base_url=leaky_upstream.url)
    components, key = guarded(table, settings)
    base = chat_server(components=components)
    bogus_key = "cbk_" + "S" * 43
    bogus_jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdXNlciJ9.c2lnbmF0dXJlLXNlY3JldA"
    with httpx.Client(base_url=base, timeout=30) as http:
        responses = [
            http.post("/api/chat", json={**OK, "model": "openai/gpt-4o-mini"}, headers={"x-api-key": key}),
            http.post("/api/chat/sse", json={**OK, "model": "openai/gpt-4o-mini"}, headers={"x-api-key": key}),
            http.post("/api/chat", json=OK, headers={"x-api-key": bogus_key}),
            http.post("/api/chat", json=OK, headers={"authorization": f"Bearer {bogus_jwt}"}),
            http.post("/api/chat", json={"messages": [{"role": "user", "content": key + "\x00"}]},
                      headers={"x-api-key": key}),
        ]
    assert responses[0].status_code >= 400 and responses[2].status_code == 401
    assert responses[4].status_code == 400
    out, err = capfd.readouterr()
    seen = "\n".join([out, err, caplog.text, *(r.text for r in responses), *(str(r.headers) for r in responses)])
    assert "openai" in seen.lower()  # the failure itself was reported and logged
    for secret in (PROVIDER_KEY, PROVIDER_KEY[8:], key, key[4:], bogus_key, bogus_jwt):
        assert secret not in seen


@pytest.mark.parametrize("leak", [
    "Incorrect API key provided: sk-proj-abcDEF1234567890abcdef. You can find your API key at https://platform.openai.com/account/api-keys.",
    "invalid x-api-key: sk-ant-api03-AbCdEf123456-7890_xyz",
    "API key not valid. Please pass a valid API key. url=https://generativelanguage.googleapis.com/v1beta/models?key=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv",
    "Request failed: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
    "The security token included in the request is invalid: AKIAIOSFODNN7EXAMPLE",
    'upstream echoed {"api_key": "cbk_9f8e7d6c5b4a3210zyxw"} back',
    "x-api-key=Zm9vYmFyc2VjcmV0 rejected",
    "forwarded token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ was expired",
])
def test_safe_message_masks_realistic_leaks(leak: str) -> None:
    cleaned = safe_message(leak)
    for secret in ("sk-proj-abcDEF1234567890abcdef", "sk-ant-api03-AbCdEf123456-7890_xyz",
                   "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv", "eyJhbGciOiJIUzI1NiJ9", "AKIAIOSFODNN7EXAMPLE",
                   "cbk_9f8e7d6c5b4a3210zyxw", "Zm9vYmFyc2VjcmV0", "eyJzdWIiOiJhbGljZSJ9"):
        assert secret not in cleaned
    assert cleaned  # still says something useful
    assert len(safe_message("x" * 10_000)) <= 300
