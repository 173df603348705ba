"""Authentication and limits on the chat path: DynamoDB round trips and time before the first token.

Runs the real `DynamoDBLimiter`, `ApiKeyAuthenticator` and `JwtAuthenticator` against moto's server
mode on 127.0.0.1, counting every request the DynamoDB client sends (botocore `before-send` hook).
Moto's latency is not DynamoDB's, so the times show how the work overlaps and what the CPU costs,
not what AWS will measure; the round-trip counts carry over exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import statistics
import threading
import time
import uuid
from typing import Any

ROUNDS = 40


class RequestCounter:
    """Counts DynamoDB requests by operation name."""

    def __init__(self, client: Any) -> None:
        self.names: list[str] = []
        self._lock = threading.Lock()
        client.meta.events.register("before-call.dynamodb", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.names.append(model.name)

    def take(self) -> list[str]:
        with self._lock:
            names, self.names = self.names, []
            return names


def _stats(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"{statistics.median(ordered):.2f} / {p95:.2f}"


def _moto() -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    from devtools.emulator import start_emulator

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per request is noise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_emulator(port=port)  # the emulator process of `make dev`
    client = boto3.session.Session().client(
        "dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench", config=Config(max_pool_connections=32))
    return server, client


async def _measure(client: Any, table: str, counter: RequestCounter) -> list[tuple[str, str, str, str]]:
    from chatcore import errors
    from chatcore.auth import Principal
    from chatcore.auth.api_keys import ApiKeyAuthenticator, ApiKeyStore
    from chatcore.events import Finish, TextDelta, Usage
    from chatcore.limits.limiter import DynamoDBLimiter
    from chatcore.limits.policy import LimitPolicy
    from starlette.requests import Request

    limiter = DynamoDBLimiter(table, LimitPolicy.from_json('{"free": {"requests_per_minute": 100000, '
                                                           '"concurrent_streams": 100}}'),
                              lambda: client, lease_ttl_s=900)
    full = DynamoDBLimiter(table, LimitPolicy.from_json('{"free": {"requests_per_minute": 1}}'), lambda: client)
    rows: list[tuple[str, str, str, str]] = []

    def history_read() -> None:  # the memory's one Query, as the endpoint overlaps it with admit
        client.query(TableName=table, KeyConditionExpression="pk = :pk",
                     ExpressionAttributeValues={":pk": {"S": "CONV#bench"}}, Limit=50)

    async def events() -> Any:
        yield TextDelta("hello")
        yield Finish("stop", usage=Usage(20, 30))

    def one_update(user: str) -> None:  # one unconditional UpdateItem of a small item, for scale
        client.update_item(TableName=table, Key={"pk": {"S": f"BENCH#{user}"}, "sk": {"S": "ONE"}},
                           UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": {"N": "1"}})

    admit_ms, overlapped_ms, alone_read_ms, settle_ms, single_ms, more_ms, refused_ms = [], [], [], [], [], [], []
    admit_calls: list[str] = []
    settle_calls: list[str] = []
    more_calls: list[str] = []
    refused_calls: list[str] = []
    for index in range(ROUNDS):
        principal = Principal(user_id=f"bench-{index % 5}")
        counter.take()
        started = time.perf_counter()
        admission = await limiter.admit(principal, 4200)
        admit_ms.append((time.perf_counter() - started) * 1000)
        admit_calls = counter.take()
        started = time.perf_counter()
        # The stored history was longer than the request showed, by more than 1/100 (the streams allowed)
        # of the headroom: written (a smaller top-up is left to the settlement and costs no request).
        await admission.reserve_more(1_000)
        more_ms.append((time.perf_counter() - started) * 1000)
        more_calls = counter.take()
        started = time.perf_counter()
        async for _ in admission.settle(events()):
            pass
        settle_ms.append((time.perf_counter() - started) * 1000)
        settle_calls = counter.take()

        started = time.perf_counter()
        await asyncio.to_thread(one_update, principal.user_id)
        single_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await asyncio.to_thread(history_read)
        alone_read_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        second, _ = await asyncio.gather(limiter.admit(principal, 4200), asyncio.to_thread(history_read))
        overlapped_ms.append((time.perf_counter() - started) * 1000)
        await second.release()

        at_limit = Principal(user_id=f"bench-full-{index}")
        await (await full.admit(at_limit, 100)).release()  # the minute's one request is used
        counter.take()
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the 429's metric record (EMF) is printed
                await full.admit(at_limit, 100)
        except errors.LimitExceededError:
            refused_ms.append((time.perf_counter() - started) * 1000)
        else:
            raise AssertionError("a request over the limit was admitted")
        refused_calls = counter.take()

    rows.append(("one UpdateItem alone (for scale)", "1", "1", _stats(single_ms)))
    rows.append(("limits: admit (one conditional UpdateItem: minute + day + lease)", str(len(admit_calls)),
                 "1", _stats(admit_ms)))
    rows.append(("limits: refused admit (429 decided from the item as it was)", str(len(refused_calls)), "1",
                 _stats(refused_ms)))
    rows.append(("history read alone (one Query)", "1", "1", _stats(alone_read_ms)))
    rows.append(("admit overlapped with the history read", str(len(admit_calls) + 1), "1", _stats(overlapped_ms)))
    rows.append(("reserve more after the history read (when it is longer than the request)",
                 str(len(more_calls)), "1 (only when needed)", _stats(more_ms)))
    rows.append(("settle at the final event (reconcile + release: one UpdateItem)", str(len(settle_calls)),
                 "1, after the last token", _stats(settle_ms)))

    store = ApiKeyStore(table, lambda: client)
    key, _ = store.create("bench-owner", "pro")
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [(b"x-api-key", key.encode())]})
    cold_ms, warm_ms = [], []
    warm_calls: list[str] = []
    for _ in range(ROUNDS):
        auth = ApiKeyAuthenticator(store)
        started = time.perf_counter()
        await auth.authenticate(request)
        cold_ms.append((time.perf_counter() - started) * 1000)
        counter.take()
        started = time.perf_counter()
        await auth.authenticate(request)
        warm_ms.append((time.perf_counter() - started) * 1000)
        warm_calls = counter.take()
    rows.append(("API key, first use on an instance (GetItem)", "1", "1", _stats(cold_ms)))
    rows.append(("API key, cached (60 s)", str(len(warm_calls)), "0", _stats(warm_ms)))
    rows.append(("JWT RS256, JWKS cached (signature + claims)", "0", "0", _stats(await _jwt_verify_ms())))
    return rows


async def _jwt_verify_ms() -> list[float]:
    import jwt
    from chatcore.auth.jwt import JwksCache, JwtAuthenticator
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", use="sig")

    async def fetch(url: str) -> dict[str, Any]:
        return {"keys": [jwk]}

    auth = JwtAuthenticator(issuer="https://issuer.example", audiences=("app",), jwks=JwksCache("x", fetch=fetch))
    token = jwt.encode({"iss": "https://issuer.example", "aud": "app", "sub": "u", "exp": int(time.time()) + 600},
                       private, algorithm="RS256", headers={"kid": "k1"})
    await auth.verify(token)
    times = []
    for _ in range(ROUNDS * 5):
        started = time.perf_counter()
        await auth.verify(token)
        times.append((time.perf_counter() - started) * 1000)
    return times


def run() -> str:
    """The markdown section for docs/benchmarks.md (`python -m bench --only limits --output -` prints it)."""
    from devtools.template_tables import create_tables

    server, client = _moto()
    try:
        table = f"bench-limits-{uuid.uuid4().hex[:8]}"
        create_tables(client, table_name=table)
        counter = RequestCounter(client)
        rows = asyncio.run(_measure(client, table, counter))
    finally:
        server.stop()
    lines = [
        "## Authentication and limits",
        "",
        f"What `AUTH_MODE` and `LIMITS_ENABLED` add before the first token, {ROUNDS} rounds against the "
        "emulator process of `make dev` on 127.0.0.1 (`bench/limits.py`). Requests are counted with a botocore hook; "
        "\"round trips on the critical path\" counts requests that run one after another (parallel "
        "requests cost one). The emulator is local, so real DynamoDB (single-digit ms per request "
        "in-region) adds its latency once per critical-path round trip; the counts carry over exactly.",
        "",
        "| step | DynamoDB requests | round trips on the critical path | median / p95 ms |",
        "|---|---|---|---|",
        *(f"| {name} | {calls} | {trips} | {timing} |" for name, calls, trips, timing in rows),
        "",
        "Reading: all of a user's limits (requests and tokens of the minute, tokens of the day, stream "
        "leases) are one item, so admitting is one conditional `UpdateItem` and settling one more: 2 write "
        "requests (2 write units: the item stays under 1 KB) per turn, down from 6 (three items, three "
        "updates each way). The endpoint overlaps the admit with the history read, so with memory on, auth "
        "plus limits add no extra round trip when the API key is cached or a JWT is used. A refused request "
        "is one failed conditional update: its 429 (which limit, when it resets) is decided from the item as "
        "it was (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), with nothing to undo. `reserve more` writes "
        "only when the stored history makes the turn larger than the request showed and the admission did "
        "not see room for every stream the user may open to take ten times as much (otherwise the settlement charges "
        "it and a turn stays at 2 writes; the table's `reserve more` row measures a written top-up). Settlement (give back "
        "unused tokens, free the lease) runs after the last token and before the final event, so it delays "
        "only the end marker, never the first token.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
