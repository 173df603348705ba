"""The answers being generated in this process, so that a stop request can end one.

A generation is registered by the chat route for the caller's conversation while its answer
streams. `POST /api/chat/{id}/stop` (or the stream log, when another invocation asked) calls
`Generation.stop()`: the answer's reader task is cancelled, so the provider call ends at once and
the memory stores the partial answer; `was_stopped(message_id)` tells the memory to mark it
`stopped` rather than `aborted` (a client that left).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

_active: dict[tuple[str, str], Generation] = {}
_stopped: dict[str, None] = {}  # message ids stopped on request (insertion-ordered, bounded)
_MAX_STOPPED = 1024


@dataclass(eq=False)
class Generation:
    """One answer being generated for `user_id` in `conversation_id`."""

    user_id: str
    conversation_id: str
    message_id: str
    _on_stop: list[Callable[[], None]] = field(default_factory=list)
    stopped: bool = False

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run `callback` (synchronously, once) when the generation is stopped."""
        self._on_stop.append(callback)

    def stop(self) -> bool:
        """Stop the generation; False when it was already stopped."""
        if self.stopped:
            return False
        self.stopped = True
        _stopped[self.message_id] = None
        while len(_stopped) > _MAX_STOPPED:
            _stopped.pop(next(iter(_stopped)))
        for callback in self._on_stop:
            callback()
        return True


def register(user_id: str, conversation_id: str, message_id: str) -> Generation:
    """Track a new generation (a newer one in the same conversation replaces the older entry)."""
    generation = Generation(user_id, conversation_id, message_id)
    _active[(user_id, conversation_id)] = generation
    return generation


def unregister(generation: Generation) -> None:
    key = (generation.user_id, generation.conversation_id)
    if _active.get(key) is generation:
        del _active[key]


def find(user_id: str, conversation_id: str) -> Generation | None:
    """The caller's generation running in this process for the conversation, if any."""
    return _active.get((user_id, conversation_id))


def was_stopped(message_id: str) -> bool:
    """Whether the answer `message_id` was stopped on request (not cut by a disconnect)."""
    return message_id in _stopped


def running() -> int:
    return len(_active)


__all__ = ["Generation", "find", "register", "running", "unregister", "was_stopped"]
