"""API keys: stored only as hashes, cached briefly, revocable; and the AUTH_MODE factory."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chatcore import errors
from chatcore.auth import LocalAuthenticator, build_authenticator
from chatcore.auth.api_keys import ApiKeyAuthenticator, ApiKeyStore, hash_key
from chatcore.auth.api_keys_cli import main as cli
from chatcore.settings import Settings
from starlette.requests import Request

from tests.moto_dynamodb import Table


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def request_with(**headers: str) -> Request:
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/api/chat", "headers": raw})


def store_for(table: Table) -> ApiKeyStore:
    return ApiKeyStore(table.name, lambda: table.client)


async def test_key_authenticates_by_either_header(table: Table) -> None:
    key, record = store_for(table).create("alice", "pro", "laptop")
    auth = ApiKeyAuthenticator(store_for(table))
    for request in (request_with(x_api_key=key), request_with(authorization=f"Bearer {key}")):
        principal = await auth.authenticate(request)
        assert (principal.user_id, principal.tier, principal.method) == ("alice", "pro", "api_key")
    assert record.key_id == hash_key(key)[:16]


def test_only_the_hash_is_stored(table: Table) -> None:
    key, _ = store_for(table).create("alice")
    dump = json.dumps(table.client.scan(TableName=table.name)["Items"])
    assert key not in dump and key.removeprefix("cbk_") not in dump
    assert hash_key(key) in dump


async def test_verified_keys_are_cached_and_revocation_takes_effect_after_the_ttl(table: Table) -> None:
    store = store_for(table)
    key, record = store.create("alice")
    clock = FakeClock()
    auth = ApiKeyAuthenticator(store, cache_ttl_s=60, clock=clock)
    for _ in range(3):
        await auth.authenticate(request_with(x_api_key=key))
    assert auth.lookups == 1  # the hot path made one read, then served from the cache

    assert store.revoke(record.key_id)
    clock.now += 30
    await auth.authenticate(request_with(x_api_key=key))  # still cached: documented revocation delay
    clock.now += 31
    with pytest.raises(errors.InvalidCredentialsError, match="revoked"):
        await auth.authenticate(request_with(x_api_key=key))
    # A fresh instance (a new Lambda) refuses it at once.
    with pytest.raises(errors.InvalidCredentialsError):
        await ApiKeyAuthenticator(store).authenticate(request_with(x_api_key=key))


async def test_unknown_and_malformed_keys(table: Table) -> None:
    auth = ApiKeyAuthenticator(store_for(table))
    for junk in ("nope", "cbk_short", "sk-" + "a" * 40, "cbk_" + "!" * 43):
        with pytest.raises(errors.InvalidCredentialsError):
            await auth.authenticate(request_with(x_api_key=junk))
    assert auth.lookups == 0  # malformed keys never reach DynamoDB
    unknown = "cbk_" + "A" * 43
    for _ in range(3):
        with pytest.raises(errors.InvalidCredentialsError):
            await auth.authenticate(request_with(x_api_key=unknown))
    assert auth.lookups == 1  # briefly cached as unknown
    with pytest.raises(errors.UnauthorizedError) as missing:
        await auth.authenticate(request_with())
    assert not isinstance(missing.value, errors.InvalidCredentialsError)


async def test_dynamodb_unavailable_is_503(table: Table) -> None:
    auth = ApiKeyAuthenticator(ApiKeyStore("no-such-table", lambda: table.client))
    with pytest.raises(errors.ServiceUnavailableError):
        await auth.authenticate(request_with(x_api_key="cbk_" + "B" * 43))


def test_cli_create_list_revoke(table: Table, capsys: pytest.CaptureFixture[str]) -> None:
    store = store_for(table)
    assert cli(["create", "--owner", "bob", "--tier", "enterprise", "--name", "ci"], store=store) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith("cbk_") and created["tier"] == "enterprise"

    assert cli(["list"], store=store) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["key_id"], row["owner"], row["status"]) for row in listed] == [(created["key_id"], "bob", "active")]
    assert created["key"] not in json.dumps(listed)

    assert cli(["revoke", created["key_id"]], store=store) == 0
    capsys.readouterr()
    assert cli(["list", "--owner", "bob"], store=store) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "revoked"
    assert cli(["revoke", "0000000000000000"], store=store) == 1


# --- AUTH_MODE -------------------------------------------------------------------------------


def test_none_is_the_local_default_but_refused_in_lambda() -> None:
    assert isinstance(build_authenticator(Settings(), lambda_environment=False), LocalAuthenticator)
    with pytest.raises(ValueError, match="AUTH_ALLOW_NONE_IN_LAMBDA"):
        build_authenticator(Settings(auth_mode="none"), lambda_environment=True)
    forced = Settings(auth_mode="none", auth_allow_none_in_lambda=True)
    assert isinstance(build_authenticator(forced, lambda_environment=True), LocalAuthenticator)


def test_lambda_has_no_silent_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "chat")
    monkeypatch.delenv("AUTH_MODE", raising=False)
    settings = Settings.from_env()
    assert settings.auth_mode == ""
    with pytest.raises(ValueError, match="AUTH_MODE must be set"):
        build_authenticator(settings)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="AUTH_MODE"):
        build_authenticator(Settings(auth_mode="basic"))


def test_api_key_mode_builds_without_touching_dynamodb() -> None:
    auth: Any = build_authenticator(Settings(auth_mode="api_key", dynamodb_endpoint_url="http://127.0.0.1:9"))
    assert isinstance(auth, ApiKeyAuthenticator)
