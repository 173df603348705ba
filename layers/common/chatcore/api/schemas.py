"""Request bodies: exactly what `useChat` (AI SDK 5-7, DefaultChatTransport) sends, plus the simple form."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class UIPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=200)
    text: str | None = None


class UIMessage(BaseModel):
    """A UIMessage (`parts`) or a simple `{role, content}` message."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, max_length=200)
    role: Literal["user", "assistant", "system"]
    parts: list[UIPart] | None = None
    content: str | None = None
    metadata: dict[str, Any] | None = None

    def text(self) -> str:
        """The message's visible text: its text parts joined, or its `content`."""
        if self.parts is not None:
            return "".join(part.text or "" for part in self.parts if part.type == "text")
        return self.content or ""


class ChatRequestBody(BaseModel):
    """`POST /api/chat` and `POST /api/chat/sse`. Extra top-level keys (the transport's `body`) are allowed."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, max_length=200)
    messages: list[UIMessage] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=300)
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    maxOutputTokens: int | None = Field(default=None, ge=1, le=1_000_000)

    @field_validator("messages")
    @classmethod
    def _last_message_has_text(cls, messages: list[UIMessage]) -> list[UIMessage]:
        if messages and messages[-1].role == "user" and not messages[-1].text().strip():
            raise ValueError("the last user message is empty")
        return messages
