"""Provider health: scheduled probes, their stored results, and the `GET /health` answer.

The health function probes every configured deployment with its provider's cheap, unbilled probe
(list models, version...): each provider once, concurrently, since a probe checks the endpoint and
the key, which all of a provider's deployments share. Results are stored as `HEALTH#<deployment>`
items; a provider found down opens its deployments' circuits (`BREAKER#<deployment>`), which every
chat instance honours within its breaker cache TTL. `GET /health` answers from stored data and
calls providers only with `?probe=true` and the `HEALTH_PROBE_TOKEN` bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chatcore import errors
from chatcore.api.errors import install_error_handlers
from chatcore.dynamodb import client_for
from chatcore.observability import emit_metrics, get_logger
from chatcore.providers.base import ProbeResult
from chatcore.routing.breaker import ITEM_TTL_S
from chatcore.routing.registry import Deployment
from chatcore.routing.router import Router
from chatcore.secrets import health_probe_token
from chatcore.settings import Settings

Status = Literal["up", "down", "unknown"]
Overall = Literal["healthy", "degraded", "down"]
PROBE_DOWN = "probe_down"  # the breaker reason a failed probe writes


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """The last probe of one deployment. `probed_at` is epoch seconds."""

    deployment: str
    provider: str
    status: Literal["up", "down"]
    latency_ms: float
    probed_at: float
    detail: str = ""


class HealthStore(Protocol):
    async def save(self, records: list[HealthRecord]) -> None: ...

    async def load(self, names: list[str]) -> dict[str, HealthRecord]: ...


class InMemoryHealthStore:
    def __init__(self) -> None:
        self.records: dict[str, HealthRecord] = {}

    async def save(self, records: list[HealthRecord]) -> None:
        self.records.update((r.deployment, r) for r in records)

    async def load(self, names: list[str]) -> dict[str, HealthRecord]:
        return {n: self.records[n] for n in names if n in self.records}


class DynamoHealthStore:
    """Probe results as items `pk=HEALTH#<deployment>`, `sk=STATE` in the one table."""

    def __init__(self, table: str, client_factory: Callable[[], Any]) -> None:
        self.table = table
        self._client_factory = client_factory

    @staticmethod
    def key(name: str) -> dict[str, Any]:
        return {"pk": {"S": f"HEALTH#{name}"}, "sk": {"S": "STATE"}}

    def _save(self, records: list[HealthRecord]) -> None:
        client = self._client_factory()
        for start in range(0, len(records), 25):  # BatchWriteItem takes at most 25 items
            items = [{"PutRequest": {"Item": {
                **self.key(r.deployment), "provider": {"S": r.provider}, "status": {"S": r.status},
                "latency_ms": {"N": repr(round(r.latency_ms, 3))}, "probed_at": {"N": repr(r.probed_at)},
                "detail": {"S": r.detail[:300]}, "expires_at": {"N": str(int(r.probed_at) + ITEM_TTL_S)},
            }}} for r in records[start:start + 25]]
            request: dict[str, Any] = {self.table: items}
            while request:
                request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    async def save(self, records: list[HealthRecord]) -> None:
        await asyncio.to_thread(self._save, records)

    def _load(self, names: list[str]) -> dict[str, HealthRecord]:
        client = self._client_factory()
        out: dict[str, HealthRecord] = {}
        for start in range(0, len(names), 100):
            request: dict[str, Any] = {self.table: {"Keys": [self.key(n) for n in names[start:start + 100]]}}
            while request:
                response = client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    name = item["pk"]["S"].removeprefix("HEALTH#")
                    out[name] = HealthRecord(
                        deployment=name, provider=item["provider"]["S"],
                        status="up" if item["status"]["S"] == "up" else "down",
                        latency_ms=float(item["latency_ms"]["N"]), probed_at=float(item["probed_at"]["N"]),
                        detail=item.get("detail", {}).get("S", ""))
                request = response.get("UnprocessedKeys") or {}
        return out

    async def load(self, names: list[str]) -> dict[str, HealthRecord]:
        return await asyncio.to_thread(self._load, names)


def health_store(settings: Settings) -> HealthStore:
    """DynamoDB when the breaker state is shared there, else in-memory."""
    if settings.breaker_store == "dynamodb":
        return DynamoHealthStore(settings.table_name,
                                 lambda: client_for(settings, critical=True))
    return InMemoryHealthStore()


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else None


class HealthService:
    """Probes and reports the deployments of one router (its registry, providers and breaker)."""

    def __init__(self, router: Router, store: HealthStore, *, clock: Callable[[], float] = time.time) -> None:
        self.router = router
        self.store = store
        self._clock = clock

    def deployments(self) -> list[Deployment]:
        """Configured deployments; the mock stand-ins only when no real provider is configured."""
        configured = [d for d in self.router.registry.deployments.values() if self.router.is_configured(d.provider)]
        real = [d for d in configured if not d.stand_in]
        return real or configured

    async def _probe_provider(self, name: str, timeout: float) -> ProbeResult:
        started = time.perf_counter()
        try:
            provider = self.router.providers.get(name)
            async with asyncio.timeout(timeout + 1.0):  # a probe that ignores its own timeout
                return await provider.probe(timeout=timeout)
        except Exception as exc:  # a probe must report, never raise
            return ProbeResult("down", (time.perf_counter() - started) * 1000, type(exc).__name__)

    async def probe(self) -> list[HealthRecord]:
        """Probe every configured provider once, concurrently; store and act on the results."""
        deployments = self.deployments()
        providers = sorted({d.provider for d in deployments})
        timeout = self.router.settings.health_probe_timeout_s
        results = dict(zip(providers, await asyncio.gather(
            *(self._probe_provider(p, timeout) for p in providers)), strict=True))
        now = self._clock()
        records = [HealthRecord(d.name, d.provider, results[d.provider].status, results[d.provider].latency_ms,
                                now, results[d.provider].detail) for d in deployments]
        await self.store.save(records)
        breaker = self.router.breaker
        await breaker.refresh([r.deployment for r in records])
        for record in records:
            state = breaker.state(record.deployment)
            if record.status == "down":
                breaker.trip(record.deployment, PROBE_DOWN, self.router.settings.breaker_unhealthy_cooldown_s)
            elif state.state == "open" and state.reason == PROBE_DOWN:
                breaker.record_success(record.deployment)  # only the probe had opened it
        await breaker.drain()
        down = [p for p, r in results.items() if r.status == "down"]
        emit_metrics("health", {}, {"ProvidersDown": (len(down), "Count")})
        for name, result in results.items():
            emit_metrics("health", {"provider": name}, {"ProbeLatency": (result.latency_ms, "Milliseconds")})
        get_logger("health").info("probed providers", extra={
            "providers": {p: {"status": r.status, "latency_ms": round(r.latency_ms, 1), "detail": r.detail}
                          for p, r in results.items()}})
        return records

    async def report(self) -> tuple[Overall, dict[str, Any]]:
        """The overall status and its details, from stored probes and breaker states."""
        deployments = self.deployments()
        names = [d.name for d in deployments]
        records = await self.store.load(names)
        breaker = self.router.breaker
        await breaker.refresh(names)
        now = self._clock()
        detail: dict[str, Any] = {}
        providers: dict[str, dict[str, Any]] = {}
        available = 0
        for d in deployments:
            record = records.get(d.name)
            status: Status = record.status if record else "unknown"
            state = breaker.state(d.name)
            if status != "down" and state.phase(now) != "open":
                available += 1
            detail[d.name] = {"provider": d.provider, "model": d.model, "tier": d.tier, "status": status,
                              "breaker": state.as_dict(now)}
            entry = providers.setdefault(d.provider, {"status": "unknown", "latencyMs": None, "lastProbe": None,
                                                      "detail": ""})
            if record and (entry["lastProbe"] is None or record.probed_at >= entry["_at"]):
                entry.update(status=record.status, latencyMs=round(record.latency_ms, 1),
                             lastProbe=_iso(record.probed_at), detail=record.detail, _at=record.probed_at)
        for entry in providers.values():
            entry.pop("_at", None)
        overall: Overall
        if available == len(deployments) and all(p["status"] != "down" for p in providers.values()):
            overall = "healthy"
        elif available == 0:
            overall = "down"
        else:
            overall = "degraded"
        return overall, {"status": overall, "checkedAt": _iso(now), "providers": providers,
                         "deployments": detail}


def check_probe_token(settings: Settings, authorization: str | None) -> None:
    """Live probing needs `Authorization: Bearer <token>`; without a token configured it is off.

    The token is `HEALTH_PROBE_TOKEN` locally, the secret named by `HEALTH_PROBE_TOKEN_SECRET` in Lambda.
    """
    expected = health_probe_token(settings)
    if not expected:
        raise errors.ForbiddenError("Live probing is disabled: set HEALTH_PROBE_TOKEN_SECRET (or HEALTH_PROBE_TOKEN "
                                    "locally) to enable ?probe=true.")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise errors.UnauthorizedError("?probe=true needs a valid bearer token.")


def create_health_app(service: HealthService) -> FastAPI:
    """The buffered `GET /health` app (served through Mangum by the health function)."""
    app = FastAPI(title="Chat backend health", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.get("/health")
    async def health(request: Request, probe: bool = False) -> JSONResponse:
        """Healthy, degraded or down, per provider and deployment, with breaker states."""
        if probe:
            check_probe_token(service.router.settings, request.headers.get("authorization"))
            await service.probe()
        overall, body = await service.report()
        return JSONResponse(body, status_code=503 if overall == "down" else 200,
                            headers={"cache-control": "no-store"})

    return app
