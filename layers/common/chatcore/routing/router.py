"""The router: one turn over a chain of deployments, with fallback, retries and circuit breaking.

Before the first token every failure is a decision (see `_decide`): try another deployment
(another provider first), retry the same one after its Retry-After or a full-jitter backoff, or
give the client an HTTP error. After the first token there is no silent switch: a failure ends
the stream with an `ErrorEvent` and the partial answer is kept and marked incomplete.

Every answer says which deployment answered, which ones failed before it and why, and what the
request cost (`Start`, `Finish.metadata` / `ErrorEvent.metadata`, response headers, one log line
and EMF metrics per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from chatcore import errors
from chatcore.clocks import Clocks, DeadlineExceededError, timed
from chatcore.events import (
    ErrorEvent,
    Event,
    FileOutput,
    Finish,
    ProviderEvent,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolInputStart,
    Usage,
    UsageReport,
)
from chatcore.messages import Message, ModelRequest
from chatcore.observability import emit_metrics, get_logger
from chatcore.prompt import fit_prompt
from chatcore.providers import ProviderRegistry
from chatcore.routing.backoff import Backoff
from chatcore.routing.breaker import CircuitBreaker, breaker_store
from chatcore.routing.pricing import cost_usd
from chatcore.routing.registry import COMPLEXITY_TIERS, Deployment, ModelRegistry, Selection, load_registry
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings
from chatcore.streams import closing

Action = Literal["raise", "unhealthy", "larger_window", "retry", "next"]

# Errors that waiting will not fix: the deployment is skipped and its circuit opened for longer.
_UNHEALTHY = (errors.AuthenticationError, errors.PermissionDeniedError, errors.QuotaExhaustedError,
              errors.ModelNotFoundError)
# The client's request is at fault: another deployment would refuse it too.
_CLIENT_FAULT = (errors.BadRequestError, errors.ContentFilteredError)


def _decide(exc: errors.ChatError) -> Action:
    """What to do about an error raised before the first token."""
    if not isinstance(exc, errors.ProviderError) or isinstance(exc, DeadlineExceededError):
        return "raise"
    if isinstance(exc, errors.ContextTooLongError):
        return "larger_window"
    if isinstance(exc, _CLIENT_FAULT):
        return "raise"
    if isinstance(exc, _UNHEALTHY):
        return "unhealthy"
    return "retry" if exc.retryable else "next"


@dataclass(slots=True)
class _Candidate:
    deployment: Deployment
    position: int
    retries: int = 0
    not_before: float = 0.0  # event-loop time


@dataclass(frozen=True, slots=True)
class Route:
    """A turn's resolved model choice: the name it asked for and the configured deployments to try."""

    requested: str
    chain: tuple[Deployment, ...]


@dataclass(frozen=True, slots=True)
class Fallback:
    """A deployment that did not answer, and why (an error code, or `circuit_open`)."""

    deployment: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"deployment": self.deployment, "error": self.error}


def model_selector(model: str | None, complexity: str | None, default_model: str) -> str:
    """What to route: the explicit model, else the tier for `complexity`, else the default."""
    if model:
        return model
    if complexity:
        return COMPLEXITY_TIERS[complexity]
    return default_model


def _fit(turn: ChatTurn, deployment: Deployment, max_output: int) -> tuple[tuple[Message, ...], str | None]:
    """The turn's prompt fitted to the deployment's context window (summary folded into the system)."""
    fitted = fit_prompt(turn.messages, turn.system, turn.summary, deployment.context_window, max_output,
                        calibration=turn.chars_per_token, provider=deployment.provider,
                        memories=turn.memories)
    return fitted.messages, fitted.system


class Router:
    """Routes turns over the model registry. One per process; everything is built on first use."""

    def __init__(self, settings: Settings, providers: ProviderRegistry, *, registry: ModelRegistry | None = None,
                 breaker: CircuitBreaker | None = None, backoff: Backoff | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.settings = settings
        self.providers = providers
        self._registry = registry
        self._breaker = breaker
        self.backoff = backoff or Backoff(settings.router_backoff_base_s, settings.router_backoff_cap_s)
        self._sleep = sleep
        self._configured: dict[str, bool] = {}
        self._chains: dict[tuple[str, ...], tuple[Deployment, ...]] = {}

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = load_registry(self.settings)
        return self._registry

    @property
    def breaker(self) -> CircuitBreaker:
        if self._breaker is None:
            s = self.settings
            self._breaker = CircuitBreaker(breaker_store(s), failure_threshold=s.breaker_failure_threshold,
                                           cooldown_s=s.breaker_cooldown_s, cache_ttl_s=s.breaker_cache_ttl_s)
        return self._breaker

    # --- selection ------------------------------------------------------------------------

    def select(self, turn: ChatTurn) -> Selection:
        """The chain for a turn (raises `RequestError` for an unknown model)."""
        selector = model_selector(turn.model, turn.complexity, self.settings.default_model)
        return self.registry.select(selector, turn.provider)

    def route(self, turn: ChatTurn) -> Route:
        """Resolve the turn's model choice once: the chain of configured deployments to try.

        Raises before anything is called or stored: 400 for an unknown model, 503 when none of
        its providers is configured.
        """
        selection = self.select(turn)
        chain = self.usable(selection)
        if turn.tools:
            # A deployment whose model cannot call tools is skipped when the request offers tools.
            chain = tuple(d for d in chain if d.tools)
            if not chain:
                raise errors.RequestError(
                    f"Model {selection.requested!r} cannot call tools; use a model that can, or send no tools.")
        return Route(selection.requested, chain)

    @staticmethod
    def for_attachments(route: Route, media_types: set[str]) -> Route:
        """`route` without the deployments that cannot take one of `media_types` (registry flags `vision`,
        `pdf`); a 400 naming the problem when none is left. Attachments are never silently dropped."""
        if not media_types:
            return route
        chain = tuple(d for d in route.chain if all(d.accepts(t) for t in media_types))
        if not chain:
            kinds = sorted({"images" if t.startswith("image/") else t for t in media_types})
            raise errors.RequestError(
                f"Model {route.requested!r} cannot read the attached {' and '.join(kinds)}: no deployment of it "
                "accepts them. Choose a model that does, or remove the attachment.")
        return Route(route.requested, chain)

    def deployments(self) -> list[Deployment]:
        """Every configured deployment; the mock stand-ins only when no real provider is configured."""
        configured = [d for d in self.registry.deployments.values() if self.is_configured(d.provider)]
        real = [d for d in configured if not d.stand_in]
        return real or configured

    def is_configured(self, provider: str) -> bool:
        known = self._configured.get(provider)
        if known is None:
            try:
                self.providers.get(provider)
                known = True
            except errors.RequestError:
                known = False
            self._configured[provider] = known
        return known

    def usable(self, selection: Selection) -> tuple[Deployment, ...]:
        """The chain without unconfigured providers; stand-ins only when nothing real is left."""
        key = tuple(d.name for d in selection.chain)
        cached = self._chains.get(key)
        if cached is not None:
            return cached
        chain: tuple[Deployment, ...]
        if len(selection.chain) == 1 and selection.chain[0].ad_hoc:
            only = selection.chain[0]
            if "/" in only.name and not self.settings.allow_ad_hoc_models:  # not in the registry
                raise errors.RequestError(
                    f"Model {selection.requested!r} is not in the model registry. Use one of: "
                    f"{', '.join(self.registry.names())}.", valid=self.registry.names())
            self.providers.get(only.provider)  # a clear 400 naming the configured providers
            chain = selection.chain
        else:
            configured = [d for d in selection.chain if self.is_configured(d.provider)]
            real = [d for d in configured if not d.stand_in]
            chain = tuple(real or configured)
        if not self.settings.allow_unpriced_models:
            # Cost control: a deployment whose price is unknown is never silently costed at $0.
            priced = tuple(d for d in chain if d.priced or d.provider == "mock")
            if chain and not priced:
                raise errors.RequestError(
                    f"Model {selection.requested!r} has no price in the model registry; give its deployments "
                    "`prices` (0 is a price) or set ALLOW_UNPRICED_MODELS=true.")
            chain = priced
        if not chain:
            providers = sorted({d.provider for d in selection.chain})
            raise errors.ServiceUnavailableError(
                f"No provider of model {selection.requested!r} is configured (needs one of: {', '.join(providers)}).")
        self._chains[key] = chain
        return chain

    @staticmethod
    def guarded(deployment: Deployment) -> bool:
        """Whether the breaker applies: not to ad-hoc mock models, whose faults are scripted per request."""
        return not (deployment.ad_hoc and deployment.provider == "mock")

    # --- streaming ------------------------------------------------------------------------

    def _budget(self, turn: ChatTurn) -> float:
        total = self.settings.max_stream_s
        if turn.deadline_s is not None:
            total = min(total, max(turn.deadline_s - self.settings.deadline_margin_s, 1.0))
        return total

    def _request(self, turn: ChatTurn, deployment: Deployment) -> ModelRequest:
        max_output = min(turn.max_output_tokens or self.settings.max_output_tokens, deployment.max_output_tokens)
        messages, system = _fit(turn, deployment, max_output)
        return ModelRequest(model=deployment.model, messages=messages, system=system,
                            temperature=turn.temperature, max_output_tokens=max_output,
                            options=turn.provider_options, top_p=turn.top_p, seed=turn.seed, stop=turn.stop,
                            response_format=turn.response_format, tools=turn.tools,
                            tool_choice=turn.tool_choice if turn.tools else None)

    async def _open(self, turn: ChatTurn, deployment: Deployment, deadline: float
                    ) -> tuple[list[ProviderEvent], AsyncIterator[ProviderEvent]]:
        """Call a deployment and read up to its first token; raise whatever fails before it."""
        provider = self.providers.get(deployment.provider)
        request = self._request(turn, deployment)
        loop = asyncio.get_running_loop()
        if deployment.total_timeout_s is not None:
            deadline = min(deadline, loop.time() + deployment.total_timeout_s)
        clocks = Clocks(first_token_s=deployment.first_token_timeout_s or self.settings.first_token_timeout_s,
                        idle_s=deployment.idle_timeout_s or self.settings.idle_timeout_s, deadline=deadline)
        events = timed(provider.stream(request), clocks, provider=deployment.provider, model=deployment.model)
        pending: list[ProviderEvent] = []
        try:
            while True:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    raise errors.TruncatedStreamError("The provider returned no answer.",
                                                      provider=deployment.provider, model=deployment.model) from None
                pending.append(event)
                # A tool call or a generated file counts as output: such an answer streams live too.
                if isinstance(event, TextDelta | ReasoningDelta | ToolInputStart | FileOutput | Finish):
                    return pending, events
        except BaseException:
            async with closing(events):  # handed over on success; closed here on failure
                raise

    def _pick(self, queue: list[_Candidate], last_failed_provider: str | None) -> _Candidate:
        """Fresh deployments before retries; another provider before the one that just failed."""
        best = min(queue, key=lambda c: (c.retries > 0, c.deployment.provider == last_failed_provider, c.position))
        queue.remove(best)
        return best

    async def stream(self, turn: ChatTurn, route: Route | None = None) -> AsyncIterator[Event]:
        """Events for one turn over `route` (resolved here when not given).

        Raises `ChatError` if every deployment fails before the first token.
        """
        loop = asyncio.get_running_loop()
        began = loop.time()
        route = route or self.route(turn)
        chain = route.chain
        guarded = [d.name for d in chain if self.guarded(d)]
        if guarded:
            await self.breaker.prepare(guarded)
        deadline = began + self._budget(turn)
        queue = [_Candidate(d, i) for i, d in enumerate(chain)]
        fallbacks: list[Fallback] = []
        last_error: errors.ChatError | None = None
        last_failed_provider: str | None = None
        attempts = 0
        record = _RequestRecord(turn, route.requested)
        try:
            while queue and attempts < self.settings.router_max_attempts:
                candidate = self._pick(queue, last_failed_provider)
                deployment = candidate.deployment
                wait = candidate.not_before - loop.time()
                if wait > 0:
                    if loop.time() + wait >= deadline:
                        continue
                    await self._sleep(wait)
                if self.guarded(deployment):
                    verdict = await self.breaker.admit(deployment.name)
                    # An open circuit skips a deployment only when another one can still answer:
                    # the last usable deployment is tried anyway (one provider must not refuse everyone).
                    if verdict == "deny" and any(self._may_answer(c.deployment) for c in queue):
                        fallbacks.append(Fallback(deployment.name, "circuit_open"))
                        if last_error is None or isinstance(last_error, errors.ServiceUnavailableError):
                            last_error = self._circuit_open_error(deployment)
                        continue
                attempts += 1
                try:
                    pending, events = await self._open(turn, deployment, deadline)
                except errors.ChatError as exc:
                    action = _decide(exc)
                    record.attempt_failed(deployment, exc)
                    if action == "raise":
                        raise
                    last_error = exc
                    last_failed_provider = deployment.provider
                    fallbacks.append(Fallback(deployment.name, exc.code))
                    self._after_failure(deployment, exc, action)
                    if action == "larger_window":
                        queue = [c for c in queue if c.deployment.context_window > deployment.context_window]
                        if not queue:
                            raise errors.ContextTooLongError(
                                "The conversation is too long for every available model "
                                f"(the largest context window tried holds {deployment.context_window} tokens). "
                                "Start a new conversation or shorten the messages.",
                                provider=deployment.provider, model=deployment.model) from exc
                    elif action == "retry":
                        self._maybe_retry(candidate, exc, queue, deadline)
                    continue
                record.started(deployment, fallbacks, loop.time() - began)
                async with closing(self._relay(turn, deployment, pending, events, fallbacks, record)) as relay:
                    async for event in relay:
                        yield event
                return
            if last_error is None:
                last_error = errors.ServiceUnavailableError("No deployment could answer in time.")
            raise last_error
        except errors.ChatError as exc:
            record.failed(exc, fallbacks)
            raise
        finally:
            record.finish()

    def _may_answer(self, deployment: Deployment) -> bool:
        """Whether `deployment` could be called now (its circuit is not known to be open)."""
        return not self.guarded(deployment) or not self.breaker.is_open(deployment.name)

    def _circuit_open_error(self, deployment: Deployment) -> errors.ServiceUnavailableError:
        retry_at = self.breaker.retry_at(deployment.name)
        retry_after = max(retry_at - self.breaker.now(), 1.0) if retry_at else None
        return errors.ServiceUnavailableError(
            f"Model deployment {deployment.name!r} is temporarily unavailable after repeated failures.",
            retry_after=retry_after)

    def _after_failure(self, deployment: Deployment, exc: errors.ChatError, action: Action) -> None:
        if not self.guarded(deployment):
            return
        if action == "unhealthy":
            self.breaker.trip(deployment.name, exc.code, self.settings.breaker_unhealthy_cooldown_s)
        elif isinstance(exc, errors.RateLimitedError) and exc.retry_after is not None:
            # Never open the circuit for longer than the provider asked to wait.
            self.breaker.record_failure(deployment.name, exc.code,
                                        cooldown_s=min(self.breaker.cooldown_s, max(exc.retry_after, 0.0)))
        elif action in ("retry", "next"):
            self.breaker.record_failure(deployment.name, exc.code)

    def _maybe_retry(self, candidate: _Candidate, exc: errors.ChatError, queue: list[_Candidate],
                     deadline: float) -> None:
        """Queue the same deployment again, behind fresh ones, if a retry is allowed and fits."""
        if candidate.retries >= self.settings.router_retries_per_deployment:
            return
        if exc.retry_after is not None:
            if exc.retry_after > self.settings.router_max_retry_after_s:
                return
            delay = exc.retry_after
        else:
            delay = self.backoff.delay(candidate.retries)
        ready = asyncio.get_running_loop().time() + delay
        if ready >= deadline:
            return
        queue.append(replace(candidate, retries=candidate.retries + 1, not_before=ready))

    async def _relay(self, turn: ChatTurn, deployment: Deployment, pending: list[ProviderEvent],
                     events: AsyncIterator[ProviderEvent], fallbacks: Sequence[Fallback],
                     record: _RequestRecord) -> AsyncIterator[Event]:
        """The committed answer: `Start`, the held events, the rest; failures become `ErrorEvent`."""
        usage: Usage | None = None
        ended = False

        def metadata(final: Usage | None) -> dict[str, object]:
            cost = cost_usd(final, deployment)
            record.usage, record.cost = final, cost
            return {"deployment": deployment.name, "fallbacks": [f.as_dict() for f in fallbacks], "costUsd": cost}

        yield Start(turn.message_id, deployment.provider, deployment.model,
                    fallbacks=tuple(f"{f.deployment}:{f.error}" for f in fallbacks), deployment=deployment.name)
        async with closing(_chain_events(pending, events)) as source:  # closed on every exit
            try:
                async for event in source:
                    if isinstance(event, UsageReport):
                        usage = event.usage
                    elif isinstance(event, Finish):
                        ended = True
                        final = event.usage or usage
                        if self.guarded(deployment):
                            self.breaker.record_success(deployment.name)
                        record.outcome = "ok"
                        yield replace(event, usage=final, metadata={**event.metadata, **metadata(final)})
                        return
                    yield event
            except errors.ProviderError as exc:
                ended = True
                if self.guarded(deployment) and exc.retryable:
                    self.breaker.record_failure(deployment.name, exc.code)
                record.outcome = "error"
                record.error_code = exc.code
                yield ErrorEvent(message=exc.message, code=exc.code, retryable=exc.retryable, usage=usage,
                                 metadata=metadata(usage))
            except Exception:  # a bug or malformed data after the first token: say so, never end silently
                ended = True
                get_logger().exception("relay failed", extra={"deployment": deployment.name})
                record.outcome = "error"
                record.error_code = "internal_error"
                yield ErrorEvent(message="The answer failed unexpectedly.", code="internal_error", retryable=True,
                                 usage=usage, metadata=metadata(usage))
        if not ended:
            record.outcome = "error"
            record.error_code = errors.TruncatedStreamError.code
            yield ErrorEvent(message="The provider ended the answer without finishing it.",
                             code=errors.TruncatedStreamError.code, retryable=True, usage=usage,
                             metadata=metadata(usage))


async def _chain_events(pending: list[ProviderEvent], events: AsyncIterator[ProviderEvent]
                        ) -> AsyncIterator[ProviderEvent]:
    async with closing(events) as source:
        for event in pending:
            yield event
        async for event in source:
            yield event


class _RequestRecord:
    """What one request did, for its log line and metrics (written once, when it ends)."""

    def __init__(self, turn: ChatTurn, requested: str) -> None:
        self.turn = turn
        self.requested = requested
        self.deployment: Deployment | None = None
        self.fallbacks: list[Fallback] = []
        self.ttft_s: float | None = None
        self.usage: Usage | None = None
        self.cost: float | None = None
        self.outcome = "cancelled"  # until the stream ends
        self.error_code: str | None = None
        self.attempt_errors: list[dict[str, object]] = []
        self._done = False

    def attempt_failed(self, deployment: Deployment, exc: errors.ChatError) -> None:
        self.attempt_errors.append({"deployment": deployment.name, "error": exc.code,
                                    "httpStatus": getattr(exc, "http_status", None), "retryAfter": exc.retry_after})

    def started(self, deployment: Deployment, fallbacks: Sequence[Fallback], ttft_s: float) -> None:
        self.deployment = deployment
        self.fallbacks = list(fallbacks)
        self.ttft_s = ttft_s

    def failed(self, exc: errors.ChatError, fallbacks: Sequence[Fallback]) -> None:
        self.outcome = "error"
        self.error_code = exc.code
        self.fallbacks = list(fallbacks)

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        usage = self.usage
        try:
            get_logger().info("chat request", extra={
                "request_id": self.turn.request_id, "user_id": self.turn.user_id,
                "message_id": self.turn.message_id, "conversation_id": self.turn.conversation_id,
                "requested_model": self.requested,
                "deployment": self.deployment.name if self.deployment else None,
                "provider": self.deployment.provider if self.deployment else None,
                "fallbacks": [f.as_dict() for f in self.fallbacks], "attempt_errors": self.attempt_errors,
                "outcome": self.outcome, "error_code": self.error_code,
                "ttft_ms": round(self.ttft_s * 1000, 1) if self.ttft_s is not None else None,
                "usage": usage.as_dict() if usage else None, "cost_usd": self.cost,
            })
            values: dict[str, tuple[float, str]] = {
                "ChatRequests": (1, "Count"),
                "ChatErrors": (1 if self.outcome == "error" else 0, "Count"),
                "Fallbacks": (len(self.fallbacks), "Count"),
            }
            if self.ttft_s is not None:
                values["TimeToFirstToken"] = (self.ttft_s * 1000, "Milliseconds")
            if usage is not None:
                values["InputTokens"] = (usage.input_tokens or 0, "Count")
                values["OutputTokens"] = (usage.output_tokens or 0, "Count")
            if self.cost is not None:
                values["CostUsd"] = (self.cost, "NoUnit")
            emit_metrics("chat", {}, values)
        except Exception:  # observability must never break a request
            get_logger().warning("request metrics failed")


__all__ = ["Fallback", "Route", "Router", "model_selector"]
