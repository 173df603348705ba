"""Work that must finish before Lambda may freeze the process, tracked in one place.

Storing an answer after a client left, settling limits, writing breaker state: such work runs as a
task started with `spawn`, and `drain` (awaited when a response ends, and by tests) waits for it.
After a response completes, Lambda may freeze the process at any moment; a task not drained by
then would resume only on the next invocation, or never.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_tasks: set[asyncio.Task[Any]] = set()  # drained at the end of a response
_detached: set[asyncio.Task[Any]] = set()  # only kept referenced


def spawn(work: Coroutine[Any, Any, T], *, drained: bool = True) -> asyncio.Task[T]:
    """Start `work` as a tracked task (kept referenced until it ends; the loop holds only weak ones).

    `drained=False` is for local work that may take long and need not finish before a freeze
    (in-process summaries when no summarize function is configured).
    """
    task = asyncio.ensure_future(work)
    tasks = _tasks if drained else _detached
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def finish(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even if the caller is cancelled meanwhile (a client that left).

    The caller still sees its own cancellation; the work carries on as a tracked task.
    """
    return await asyncio.shield(spawn(work))


def pending() -> int:
    """How many tracked tasks are still running."""
    return len(_tasks)


async def drain(timeout_s: float | None = None) -> None:
    """Wait for every tracked task, including those started meanwhile, at most `timeout_s`."""
    async def wait_all() -> None:
        while running := [task for task in _tasks if not task.done()]:
            await asyncio.wait(running)

    if timeout_s is None:
        await wait_all()
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await wait_all()
