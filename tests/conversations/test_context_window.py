"""fit_prompt: within the window whenever possible, newest messages first, clear 413 otherwise."""

from __future__ import annotations

import pytest
from chatcore import errors
from chatcore.messages import Message
from chatcore.prompt import SUMMARY_HEADING, fit_prompt
from chatcore.tokens import estimate_messages_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

texts = st.text(min_size=0, max_size=400)
conversations = st.lists(st.tuples(st.sampled_from(["user", "assistant"]), texts), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(conversations, st.integers(min_value=300, max_value=5_000), st.integers(min_value=1, max_value=400),
       st.floats(min_value=1.5, max_value=6.0), st.one_of(st.none(), texts), st.one_of(st.none(), texts))
def test_the_prompt_fits_or_a_shorter_one_could_not(raw: list[tuple[str, str]], window: int, output: int,
                                                    ratio: float, system: str | None, summary: str | None) -> None:
    messages = [Message(role=role, content=text) for role, text in raw]  # type: ignore[arg-type]
    messages.append(Message(role="user", content="the question"))
    budget = int(window * 0.95) - output
    try:
        fitted = fit_prompt(messages, system, summary, window, output, calibration=ratio)
    except errors.ContextTooLongError:
        # Only when the system prompt and the newest message alone exceed the budget.
        assert estimate_messages_tokens(messages[-1:], system, ratio) > budget
        return
    assert fitted.estimated_input_tokens == estimate_messages_tokens(fitted.messages, fitted.system, ratio)
    assert fitted.estimated_input_tokens <= budget
    kept = [m for m in messages if m.content]
    assert list(fitted.messages) == kept[len(kept) - len(fitted.messages):]  # a suffix: the most recent
    assert fitted.messages[0].role == "user" and fitted.messages[-1].content == "the question"
    assert fitted.summary_included == (bool(summary) and SUMMARY_HEADING in (fitted.system or ""))
    if system:
        assert (fitted.system or "").startswith(system)


def test_everything_fits_in_a_large_window() -> None:
    messages = [Message("user", "a" * 100), Message("assistant", "b" * 100), Message("user", "c")]
    fitted = fit_prompt(messages, "sys", "earlier", 100_000, 1_000)
    assert fitted.messages == tuple(messages) and fitted.dropped_messages == 0
    assert fitted.system == f"sys\n\n{SUMMARY_HEADING}\nearlier"


def test_calibration_changes_how_much_fits() -> None:
    messages = [Message("user" if n % 2 == 0 else "assistant", "word " * 50) for n in range(41)]
    dense = fit_prompt(messages, None, None, 2_000, 200, calibration=2.0)
    sparse = fit_prompt(messages, None, None, 2_000, 200, calibration=6.0)
    assert len(sparse.messages) > len(dense.messages)


def test_a_single_message_too_long_for_the_window_is_a_413() -> None:
    with pytest.raises(errors.ContextTooLongError) as caught:
        fit_prompt([Message("user", "x" * 40_000)], None, None, 8_000, 1_000)
    assert caught.value.status_code == 413
