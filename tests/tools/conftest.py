"""Fixtures for tool tests: an HTTP tool endpoint and an MCP server on 127.0.0.1, and the mock model
that calls a named tool (`mock/tool-call?name=&input=`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def tool_model(name: str, tool_input: Any) -> str:
    """The mock model that calls tool `name` once with `tool_input`, then reports its result."""
    return f"mock/tool-call?name={name}&input={quote(json.dumps(tool_input, separators=(',', ':')))}"


class ToolEndpoint:
    """A tool server: `/ok` echoes the input as output, `/fail` answers 500, `/slow` waits 5 s."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        app = FastAPI()

        @app.post("/{kind}")
        async def tool(kind: str, request: Request) -> JSONResponse:
            body = await request.json()
            self.calls.append(body)
            self.headers.append(dict(request.headers))
            if kind == "fail":
                return JSONResponse({"detail": "internal secret detail"}, status_code=500)
            if kind == "slow":
                await asyncio.sleep(5)
            return JSONResponse({"echo": body["input"], "tool": body["toolName"]})

        self.app = app


@pytest.fixture
def tool_endpoint(serve_asgi: Callable[..., str]) -> tuple[str, ToolEndpoint]:
    endpoint = ToolEndpoint()
    return serve_asgi(endpoint.app), endpoint


def http_tool(url: str, **extra: Any) -> dict[str, Any]:
    return {"description": "Looks a city up.",
            "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "execute": {"type": "http", "url": url, **extra.pop("execute", {})}, **extra}


def ui_chunks(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in text.split("\n\n") if line.startswith("data: {")]
