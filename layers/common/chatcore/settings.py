"""Typed settings, read once from the environment (see the README for every variable)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache


def _str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


def _list(name: str, default: str = "") -> tuple[str, ...]:
    return tuple(part.strip() for part in _str(name, default).split(",") if part.strip())


def in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


@dataclass(frozen=True)
class Settings:
    stage: str = "local"
    default_model: str = "mock/echo"
    table_name: str = "chat-local"
    dynamodb_endpoint_url: str | None = None
    aws_region: str = "us-east-1"

    openai_api_key: str | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    anthropic_api_key: str | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    gemini_api_key: str | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    ollama_base_url: str | None = None
    bedrock_enabled: bool = False
    secret_names: dict[str, str] = field(default_factory=dict)

    mock_ttft_ms: float = 100.0
    mock_pace_ms: float = 20.0
    mock_tokens: int = 40

    first_token_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    max_stream_s: float = 840.0
    deadline_margin_s: float = 5.0
    max_output_tokens: int = 4096

    cors_allow_origins: tuple[str, ...] = ("*",)
    cors_in_app: bool = True
    max_body_bytes: int = 1_048_576
    max_messages: int = 500
    max_message_chars: int = 100_000
    allow_client_system_prompt: bool = False
    system_prompt: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        openai_key = _str("OPENAI_API_KEY") or None
        anthropic_key = _str("ANTHROPIC_API_KEY") or None
        gemini_key = _str("GEMINI_API_KEY") or None
        secret_names = {
            provider: name
            for provider, name in (
                ("openai", _str("OPENAI_API_KEY_SECRET")),
                ("anthropic", _str("ANTHROPIC_API_KEY_SECRET")),
                ("gemini", _str("GEMINI_API_KEY_SECRET")),
            )
            if name
        }
        default_model = _str("DEFAULT_MODEL")
        if not default_model:
            default_model = "openai/gpt-4o-mini" if (openai_key or "openai" in secret_names) else "mock/echo"
        return cls(
            stage=_str("STAGE", "local"),
            default_model=default_model,
            table_name=_str("TABLE_NAME", "chat-local"),
            dynamodb_endpoint_url=_str("DYNAMODB_ENDPOINT_URL") or None,
            aws_region=_str("AWS_REGION", _str("AWS_DEFAULT_REGION", "us-east-1")),
            openai_api_key=openai_key,
            openai_base_url=_str("OPENAI_BASE_URL", "https://api.openai.com/v1"),
            anthropic_api_key=anthropic_key,
            anthropic_base_url=_str("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            gemini_api_key=gemini_key,
            gemini_base_url=_str("GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
            ollama_base_url=_str("OLLAMA_BASE_URL") or None,
            bedrock_enabled=_bool("BEDROCK_ENABLED", False),
            secret_names=secret_names,
            mock_ttft_ms=_float("MOCK_TTFT_MS", 100.0),
            mock_pace_ms=_float("MOCK_PACE_MS", 20.0),
            mock_tokens=_int("MOCK_TOKENS", 40),
            first_token_timeout_s=_float("FIRST_TOKEN_TIMEOUT_S", 30.0),
            idle_timeout_s=_float("IDLE_TIMEOUT_S", 60.0),
            max_stream_s=_float("MAX_STREAM_S", 840.0),
            deadline_margin_s=_float("DEADLINE_MARGIN_S", 5.0),
            max_output_tokens=_int("MAX_OUTPUT_TOKENS", 4096),
            cors_allow_origins=_list("CORS_ALLOW_ORIGINS", "*"),
            cors_in_app=_bool("CORS_IN_APP", not in_lambda()),
            max_body_bytes=_int("MAX_BODY_BYTES", 1_048_576),
            max_messages=_int("MAX_MESSAGES", 500),
            max_message_chars=_int("MAX_MESSAGE_CHARS", 100_000),
            allow_client_system_prompt=_bool("ALLOW_CLIENT_SYSTEM_PROMPT", False),
            system_prompt=_str("SYSTEM_PROMPT") or None,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read on first use (cold start), then cached."""
    return Settings.from_env()
