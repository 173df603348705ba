"""The steps of one turn: call the model, run the server tools it asked for, call it again.

`StepLoop.events()` is the turn's one event stream, whatever the number of model calls: `Start`
once, `StepStart` / `StepFinish` around each model call, tool inputs checked against their
schemas (a bad one is a `ToolInputReady` with `error`, which the model sees as the call's result),
`ToolOutput` / `ToolOutputError` for the server tools run between steps, and one final `Finish`
(or `ErrorEvent`) whose usage and cost are the sums over the steps.

The turn ends after a step without tool calls, after `MAX_TOOL_STEPS` model calls, or when a call
waits for someone else: a client tool (its output comes with the client's next request) or a tool
that needs the user's approval (`ToolApprovalRequest`). A request that continues such a turn first
resolves what waited: approved calls run, denied ones are `ToolDenied` (never run), and the model
is called again with every result. The whole turn shares one time budget (`MAX_STREAM_S` and the
Lambda deadline).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from chatcore import errors
from chatcore.events import (
    ErrorEvent,
    Event,
    Finish,
    Start,
    StepFinish,
    StepStart,
    TextDelta,
    ToolApprovalRequest,
    ToolDenied,
    ToolInputReady,
    ToolOutput,
    ToolOutputError,
    Usage,
    UsageReport,
)
from chatcore.messages import Message, ToolCall, ToolResult
from chatcore.prompt import prompt_tokens
from chatcore.routing.router import Route, Router
from chatcore.routing.turn import ChatTurn
from chatcore.service.tools import ToolFailure, Toolset
from chatcore.settings import Settings
from chatcore.streams import closing
from chatcore.tool_parts import DENIED_TEXT, Approval

MAX_PARALLEL_TOOLS = 4  # server tool calls of one step that run at once
NOT_APPROVED_TEXT = "The tool call was not approved; it was not run."
NO_OUTPUT_TEXT = "No output was provided for this tool call."


class Reserve(Protocol):
    """Reserve `tokens` more for the turn (`Admission.reserve_more`), `prompt_tokens` of them prompt."""

    async def __call__(self, tokens: int, *, prompt_tokens: int | None = None) -> None: ...


def sent_tokens(turn: ChatTurn, route: Route) -> int:
    """The estimated input tokens of the prompt one model call of `turn` sends: the system prompt, the
    memory block, the summary and every message (with tool calls and results), bounded by the largest
    context window of the route (prompt fitting drops what does not fit)."""
    total = prompt_tokens(turn.messages, turn.system, turn.summary, turn.memories, turn.chars_per_token)
    return min(total, max((d.context_window for d in route.chain), default=total))


def add_usage(a: Usage | None, b: Usage | None) -> Usage | None:
    """The sum of two usages (a side unknown in both stays unknown)."""
    if a is None or b is None:
        return a or b

    def plus(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    return Usage(plus(a.input_tokens, b.input_tokens), plus(a.output_tokens, b.output_tokens),
                 plus(a.cached_input_tokens, b.cached_input_tokens), plus(a.reasoning_tokens, b.reasoning_tokens))


@dataclass
class _Totals:
    usage: Usage | None = None
    cost: float | None = 0.0
    steps: int = 0
    unreported: bool = False  # a step's usage is not known (both sides)

    def add(self, usage: Usage | None, metadata: dict[str, object]) -> None:
        self.usage = add_usage(self.usage, usage)
        if usage is None or usage.input_tokens is None or usage.output_tokens is None:
            self.unreported = True
        cost = metadata.get("costUsd")
        self.cost = None if self.cost is None or not isinstance(cost, int | float) else self.cost + cost

    def used(self) -> int | None:
        """The tokens the steps so far used, or None when one of them did not report its usage."""
        if self.unreported or self.usage is None:
            return None
        return (self.usage.input_tokens or 0) + (self.usage.output_tokens or 0)

    def metadata(self, metadata: dict[str, object]) -> dict[str, object]:
        extra: dict[str, object] = {"steps": self.steps} if self.steps > 1 else {}
        return {**metadata, "costUsd": self.cost, **extra} if "costUsd" in metadata or self.steps > 1 \
            else {**metadata, **extra}


@dataclass
class _Step:
    text: list[str] = field(default_factory=list)
    calls: list[ToolInputReady] = field(default_factory=list)
    usage: Usage | None = None


class StepLoop:
    """One turn's model calls and tool runs (see the module docstring)."""

    def __init__(self, router: Router, route: Route, turn: ChatTurn, toolset: Toolset, settings: Settings,
                 approvals: dict[str, Approval] | None = None,
                 reserve: Reserve | None = None, reserved: int = 0) -> None:
        self.reserve = reserve  # limits: reserve each later step's tokens before calling the model
        self.reserved = reserved  # what the turn holds so far (the first step's prompt and output cap)
        self.router = router
        self.route = route
        self.turn = turn
        self.toolset = toolset
        self.settings = settings
        self.approvals = approvals or {}
        self._semaphore = asyncio.Semaphore(MAX_PARALLEL_TOOLS)

    def _budget_s(self) -> float:
        total = self.settings.max_stream_s
        if self.turn.deadline_s is not None:
            total = min(total, max(self.turn.deadline_s - self.settings.deadline_margin_s, 1.0))
        return total

    async def events(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        end = loop.time() + self._budget_s()
        messages = list(self.turn.messages)
        before, messages = await self._resolve_pending(messages, end)
        totals = _Totals()
        started = False
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                yield ErrorEvent(message="The answer took too long and was stopped.", code="deadline_exceeded",
                                 usage=totals.usage, metadata=totals.metadata({}))
                return
            step_turn = replace(self.turn, messages=tuple(messages),
                                deadline_s=remaining + self.settings.deadline_margin_s)
            if totals.steps and self.reserve is not None:
                # A refusal ends the turn with an in-stream error, never a silent stop.
                try:
                    await self._reserve_step(step_turn, totals)
                except errors.ChatError as exc:
                    yield ErrorEvent(message=exc.message, code=exc.code, retryable=exc.retryable,
                                     usage=totals.usage, metadata=totals.metadata({}))
                    return
            totals.steps += 1
            step = _Step()
            async with closing(self.router.stream(step_turn, self.route)) as source:
                try:
                    async for event in source:
                        if isinstance(event, Start):
                            if not started:
                                started = True
                                yield event
                                for early in before:
                                    yield early
                            yield StepStart()
                        elif isinstance(event, UsageReport):
                            step.usage = event.usage
                            yield UsageReport(add_usage(totals.usage, event.usage) or event.usage)
                        elif isinstance(event, TextDelta):
                            step.text.append(event.text)
                            yield event
                        elif isinstance(event, ToolInputReady):
                            problem = event.error or self.toolset.input_error(event.name, event.input)
                            event = replace(event, error=problem)
                            step.calls.append(event)
                            yield event
                        elif isinstance(event, ErrorEvent):
                            totals.add(event.usage or step.usage, event.metadata)
                            yield replace(event, usage=totals.usage, metadata=totals.metadata(event.metadata))
                            return
                        elif isinstance(event, Finish):
                            totals.add(event.usage or step.usage, event.metadata)
                            results, waiting = [], False
                            if step.calls:
                                async for item in self._run_calls(step.calls, end):
                                    if isinstance(item, ToolResult):
                                        results.append(item)
                                    elif item is None:
                                        waiting = True
                                    else:
                                        yield item
                            yield StepFinish()
                            if not step.calls or waiting or totals.steps >= self.settings.max_tool_steps:
                                yield replace(event, usage=totals.usage, metadata=totals.metadata(event.metadata))
                                return
                            messages += [
                                Message("assistant", "".join(step.text), tool_calls=tuple(
                                    ToolCall(c.call_id, c.name, c.input if c.error is None else {}, c.metadata)
                                    for c in step.calls)),
                                Message("tool", "", tool_results=tuple(results)),
                            ]
                            break
                        else:
                            yield event
                    else:  # the router ended without Finish or ErrorEvent (it never does): stop here
                        return
                except errors.ChatError as exc:
                    if not started:
                        raise  # before the first event: the entry point answers it as an HTTP error
                    yield ErrorEvent(message=exc.message, code=exc.code, retryable=exc.retryable,
                                     usage=totals.usage, metadata=totals.metadata({}))
                    return

    async def _reserve_step(self, step_turn: ChatTurn, totals: _Totals) -> None:
        """Before a later step: make the turn hold what its steps used so far plus what this one
        sends (system prompt, memories, summary, messages with the tool results, estimated as for the
        first step) and its output cap. What the earlier steps reserved but did not use counts
        towards it; when their usage is unknown, all of it is taken as used."""
        assert self.reserve is not None
        sent = sent_tokens(step_turn, self.route)
        cap = self.turn.max_output_tokens or self.settings.max_output_tokens
        used = totals.used()
        extra = (self.reserved if used is None else used) + sent + cap - self.reserved
        await self.reserve(extra, prompt_tokens=sent)
        self.reserved += max(extra, 0)

    async def _run_calls(self, calls: Sequence[ToolInputReady], end: float) -> AsyncIterator[Any]:
        """A step's calls: tool events to show, `ToolResult`s for the next step, None when one waits."""
        to_run: list[ToolCall] = []
        results: dict[str, ToolResult] = {}
        for call in calls:
            if call.error is not None:
                results[call.call_id] = ToolResult(call.call_id, call.name, call.error, is_error=True)
                continue
            tool = self.toolset.server.get(call.name)
            if tool is None:  # a client tool: its output comes with the client's next request
                yield None
            elif tool.needs_approval:
                yield ToolApprovalRequest(call.call_id, f"approval_{uuid.uuid4().hex}")
                yield None
            else:
                to_run.append(ToolCall(call.call_id, call.name, call.input, call.metadata))
        for event, result in await self._execute(to_run, end):
            yield event
            results[result.call_id] = result
        for call in calls:
            if call.call_id in results:
                yield results[call.call_id]

    async def _execute(self, calls: Sequence[ToolCall], end: float) -> list[tuple[Event, ToolResult]]:
        """Run server tool calls concurrently (bounded); each one's event and result, in call order."""
        loop = asyncio.get_running_loop()

        async def one(call: ToolCall) -> tuple[Event, ToolResult]:
            async with self._semaphore:
                remaining = end - loop.time()
                try:
                    if remaining <= 0:
                        raise ToolFailure(f"No time was left to run the tool {call.name}.")
                    output = await self.toolset.run(call, remaining)
                except ToolFailure as exc:
                    return ToolOutputError(call.id, exc.message), ToolResult(call.id, call.name, exc.message,
                                                                             is_error=True)
                return ToolOutput(call.id, output), ToolResult(call.id, call.name, output)

        return list(await asyncio.gather(*(one(c) for c in calls)))

    async def _resolve_pending(self, messages: list[Message], end: float) -> tuple[list[Event], list[Message]]:
        """A continued turn: results for the calls that waited (approved ones run, denied ones never)."""
        index = len(messages) - 1
        given: tuple[ToolResult, ...] = ()
        if index >= 0 and messages[index].role == "tool":
            given = messages[index].tool_results
            index -= 1
        if index < 0 or messages[index].role != "assistant" or not messages[index].tool_calls:
            return [], messages
        assistant = messages[index]
        done = {r.call_id for r in given}
        pending = [c for c in assistant.tool_calls if c.id not in done]
        if not pending:
            return [], messages
        events: list[Event] = []
        results = {r.call_id: r for r in given}
        to_run: list[ToolCall] = []
        for call in pending:
            approval = self.approvals.get(call.id)
            tool = self.toolset.server.get(call.name)
            if approval is not None and approval.approved is False:
                events.append(ToolDenied(call.id))
                results[call.id] = ToolResult(call.id, call.name, DENIED_TEXT, is_error=True)
            elif tool is not None and (not tool.needs_approval or (approval is not None and approval.approved)):
                problem = self.toolset.input_error(call.name, call.input)
                if problem:
                    events.append(ToolOutputError(call.id, problem))
                    results[call.id] = ToolResult(call.id, call.name, problem, is_error=True)
                else:
                    to_run.append(call)
            else:
                text = NOT_APPROVED_TEXT if tool is not None else NO_OUTPUT_TEXT
                events.append(ToolOutputError(call.id, text))
                results[call.id] = ToolResult(call.id, call.name, text, is_error=True)
        for event, result in await self._execute(to_run, end):
            events.append(event)
            results[result.call_id] = result
        ordered = tuple(results[c.id] for c in assistant.tool_calls if c.id in results)
        return events, [*messages[:index + 1], Message("tool", "", tool_results=ordered)]
