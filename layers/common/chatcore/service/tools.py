"""Tools: the client's (from the request, never run here) and the operator's server tools.

Server tools come from the first of `TOOLS_JSON` (inline JSON), `TOOLS_FILE` (a path) and
`TOOLS_PARAMETER` (an SSM parameter), read once per process:

    {"<name>": {"description": "...", "inputSchema": {JSON Schema},
                "execute": {"type": "http", "url": "...", "headers"?: {...}, "timeoutS"?: 10}
                         | {"type": "mcp", "url": "...", "tool"?: "<name on the server>", "headers"?, "timeoutS"?},
                "needsApproval"?: false}}

An HTTP tool is a POST of `{"toolName", "toolCallId", "input"}` as JSON; the JSON response body is
its output (a non-JSON body is its output as text). An MCP tool is called on a remote MCP server over
streamable HTTP through the official `mcp` SDK (imported on first use, so the cold start does not pay
for it); an MCP tool without `description`/`inputSchema` takes them from the server's tool list,
read on first use and cached; a failed listing leaves the server's tools out of the turns that follow
until a backoff ends (30 s, doubling up to 5 min), so a down server does not slow every chat.
Header values may be `{"secret": "<name>", "prefix"?: "Bearer "}`, a secret fetched like provider
keys (`chatcore.secrets`).

Tool input is checked against the tool's JSON Schema with `jsonschema` (installed with `mcp`); a
failure is a tool-input error the model sees. Every error text a client may see is sanitized like a
provider's (`safe_message`): no response bodies, URLs or secrets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatcore import errors
from chatcore.errors import safe_message
from chatcore.messages import ToolCall, ToolSpec
from chatcore.observability import emit_metrics, get_logger
from chatcore.settings import Settings

if TYPE_CHECKING:  # httpx is imported when a tool first runs: the cold start does not pay for it
    import httpx

MAX_OUTPUT_BYTES = 200_000  # a larger tool output is an error the model sees, not a huge prompt
TOOL_NAME = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"  # what every provider accepts


class ToolFailure(Exception):
    """A tool call failed; `message` is safe to show a client and the model."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Secret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=1)
    prefix: str = ""


class _HttpExecute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str | _Secret] = Field(default_factory=dict)
    timeoutS: float = Field(default=10.0, gt=0, le=900)


class _McpExecute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["mcp"]
    url: str = Field(pattern=r"^https?://")
    tool: str | None = None  # its name on the MCP server; default: the configured name
    headers: dict[str, str | _Secret] = Field(default_factory=dict)
    timeoutS: float = Field(default=10.0, gt=0, le=900)


class _ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    inputSchema: dict[str, Any] | None = None
    execute: _HttpExecute | _McpExecute = Field(discriminator="type")
    needsApproval: bool = False


@dataclass(frozen=True, slots=True)
class ServerTool:
    """An operator's tool: what the model is told, how it runs, and whether the user must approve."""

    name: str
    description: str | None
    input_schema: dict[str, Any] | None
    execute: _HttpExecute | _McpExecute
    needs_approval: bool = False

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description or "",
                        self.input_schema or {"type": "object", "properties": {}})


def parse_tools(raw: Any, source: str, *, secret_prefix: str | None = None) -> dict[str, ServerTool]:
    """Validate a tools document; raises `ValueError` naming what is wrong (a bad one fails the cold start).

    With `secret_prefix` (`TOOL_SECRET_PREFIX`, `<stack>/tools/` in a deployment), every header secret
    must be named under it, the only names the chat function's role may read: a name outside it fails
    the cold start with that reason instead of every call of the tool with AccessDenied.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"Invalid tools from {source}: expected an object of tool name -> tool.")
    tools: dict[str, ServerTool] = {}
    import re

    for name, spec in raw.items():
        if not re.match(TOOL_NAME, name):
            raise ValueError(f"Invalid tools from {source}: tool name {name!r} must match {TOOL_NAME}.")
        try:
            parsed = _ToolSpec.model_validate(spec)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
            raise ValueError(f"Invalid tool {name!r} from {source}: {problems}") from None
        if parsed.inputSchema is not None:
            schema_problem = check_schema(parsed.inputSchema)
            if schema_problem:
                raise ValueError(f"Invalid tool {name!r} from {source}: inputSchema: {schema_problem}")
        if isinstance(parsed.execute, _HttpExecute) and parsed.inputSchema is None:
            raise ValueError(f"Invalid tool {name!r} from {source}: an HTTP tool needs an inputSchema.")
        if secret_prefix:
            for header, value in parsed.execute.headers.items():
                if isinstance(value, _Secret) and not _secret_under(value.secret, secret_prefix):
                    raise ValueError(
                        f"Invalid tool {name!r} from {source}: header {header!r}: secret {value.secret!r} must be named "
                        f"{secret_prefix}<name> (Secrets Manager) or ssm:/{secret_prefix}<name> (SSM), the only "
                        "names the chat function may read.")
        tools[name] = ServerTool(name, parsed.description, parsed.inputSchema, parsed.execute, parsed.needsApproval)
    return tools


def _secret_under(name: str, prefix: str) -> bool:
    """Whether a secret name (`chatcore.secrets` format) lies under `prefix` in Secrets Manager or SSM."""
    if name.startswith("ssm:"):
        return name[4:].startswith("/" + prefix)
    return name.removeprefix("secretsmanager:").startswith(prefix)


def load_tools(settings: Settings) -> dict[str, ServerTool]:
    """The operator's server tools from the first configured source (none configured: none)."""
    prefix = settings.tool_secret_prefix
    if settings.tools_json:
        return parse_tools(_json(settings.tools_json, "TOOLS_JSON"), "TOOLS_JSON", secret_prefix=prefix)
    if settings.tools_file:
        try:
            text = Path(settings.tools_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"TOOLS_FILE {settings.tools_file!r} cannot be read: {exc.strerror}") from None
        return parse_tools(_json(text, settings.tools_file), settings.tools_file, secret_prefix=prefix)
    if settings.tools_parameter:
        from aws_lambda_powertools.utilities import parameters

        value = parameters.get_parameter(settings.tools_parameter, max_age=300)
        source = f"SSM {settings.tools_parameter}"
        return parse_tools(_json(str(value), source), source, secret_prefix=prefix)
    return {}


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc.msg} (line {exc.lineno})") from None


# --- JSON Schema ------------------------------------------------------------------------------


def check_schema(schema: dict[str, Any]) -> str | None:
    """What is wrong with a JSON Schema, or None."""
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return safe_message(exc.message, 200)
    return None


def input_error(schema: dict[str, Any] | None, value: Any) -> str | None:
    """Why `value` does not satisfy `schema` (None when it does, or there is no schema)."""
    if not schema:
        return None
    from jsonschema import Draft202012Validator

    error = next(iter(sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return safe_message(f"{error.message}" + (f" (at {where})" if where else ""), 300)


# --- Executors --------------------------------------------------------------------------------


async def _headers(configured: Mapping[str, str | _Secret]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in configured.items():
        if isinstance(value, _Secret):
            from chatcore.secrets import fetch_secret

            try:
                secret = await asyncio.to_thread(fetch_secret, value.secret, "tool")
            except Exception:
                raise ToolFailure("The tool's credentials could not be loaded.") from None
            headers[name] = value.prefix + secret
        else:
            headers[name] = value
    return headers


def _bounded(output: Any) -> Any:
    if len(json.dumps(output, ensure_ascii=False, default=str).encode()) > MAX_OUTPUT_BYTES:
        raise ToolFailure(f"The tool's output is larger than {MAX_OUTPUT_BYTES} bytes.")
    return output


class HttpExecutor:
    """POST `{"toolName", "toolCallId", "input"}`; the JSON response body is the output."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    async def run(self, tool: ServerTool, call: ToolCall, timeout_s: float) -> Any:
        execute = tool.execute
        assert isinstance(execute, _HttpExecute)
        headers = {"content-type": "application/json", **await _headers(execute.headers)}
        body = {"toolName": tool.name, "toolCallId": call.id, "input": call.input}
        timeout = min(execute.timeoutS, timeout_s)
        import httpx

        try:
            response = await self.client().post(execute.url, json=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            raise ToolFailure(f"The tool {tool.name} did not answer within {timeout:g} s.") from None
        except httpx.HTTPError:
            raise ToolFailure(f"The tool {tool.name} could not be reached.") from None
        if not response.is_success:
            raise ToolFailure(f"The tool {tool.name} failed (HTTP {response.status_code}).")
        if len(response.content) > MAX_OUTPUT_BYTES:
            raise ToolFailure(f"The tool's output is larger than {MAX_OUTPUT_BYTES} bytes.")
        try:
            return response.json()
        except ValueError:
            return response.text


@dataclass
class _McpListing:
    tools: dict[str, Any] = field(default_factory=dict)  # name -> the server's Tool


class McpServerUnavailable(Exception):
    """An MCP server's tool list could not be read (now, or recently: it is backing off)."""


@dataclass
class _McpServer:
    """What one MCP server's listing is: cached, being read, or failed and backing off until `retry_at`."""

    listing: _McpListing | None = None
    reading: asyncio.Future[_McpListing | None] | None = None
    failures: int = 0
    retry_at: float = 0.0


class McpExecutor:
    """Calls tools on remote MCP servers (streamable HTTP) through the `mcp` SDK; their lists are cached.

    A failed listing is remembered per server: the next turns go on without that server's tools, at
    once, until a backoff (`backoff_s`, doubling per failure up to `max_backoff_s`) ends and one turn
    lists again. Concurrent turns share one listing attempt per server, and never wait for another
    server's, so a down tool server does not slow every chat.
    """

    def __init__(self, *, backoff_s: float = 30.0, max_backoff_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._servers: dict[str, _McpServer] = {}
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock

    async def _session_call(self, execute: _McpExecute, timeout_s: float, work: Any) -> Any:
        import httpx
        from mcp import ClientSession  # imported on first use: the cold start does not pay for it
        from mcp.client.streamable_http import streamable_http_client

        headers = await _headers(execute.headers)
        async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s)) as http, \
                streamable_http_client(execute.url, http_client=http) as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)

    async def listing(self, execute: _McpExecute, timeout_s: float) -> _McpListing:
        """The server's tools, listed on first use and then cached for the process.

        Raises `McpServerUnavailable` when the listing failed, or failed recently (backing off).
        """
        server = self._servers.setdefault(execute.url, _McpServer())
        if server.listing is not None:
            return server.listing
        if server.reading is None:
            if self._clock() < server.retry_at:
                raise McpServerUnavailable(execute.url)
            server.reading = asyncio.ensure_future(self._read(server, execute, timeout_s))
        # Shielded: a turn that is cancelled (its client left) does not cancel the others' listing.
        listing = await asyncio.shield(server.reading)
        if listing is None:
            raise McpServerUnavailable(execute.url)
        return listing

    async def _read(self, server: _McpServer, execute: _McpExecute, timeout_s: float) -> _McpListing | None:
        """One listing attempt; records its outcome and never raises (nobody may be waiting for it)."""

        async def list_all(session: Any) -> _McpListing:
            result = await session.list_tools()
            return _McpListing({t.name: t for t in result.tools})

        try:
            listing = await asyncio.wait_for(self._session_call(execute, timeout_s, list_all), timeout_s)
        except Exception as exc:
            server.failures += 1
            backoff = min(self._backoff_s * 2 ** (server.failures - 1), self._max_backoff_s)
            server.retry_at = self._clock() + backoff
            # Once per failed attempt, not per turn: the turns in between skip the server silently.
            get_logger().warning("mcp tool list failed", extra={
                "mcp_server": _server_name(execute.url), "error": type(exc).__name__,
                "failures": server.failures, "retry_in_s": backoff})
            emit_metrics("chat", {}, {"McpListFailures": (1, "Count")})
            return None
        finally:
            server.reading = None
        server.listing, server.failures, server.retry_at = listing, 0, 0.0
        return listing

    async def run(self, tool: ServerTool, call: ToolCall, timeout_s: float) -> Any:
        execute = tool.execute
        assert isinstance(execute, _McpExecute)
        remote = execute.tool or tool.name
        timeout = min(execute.timeoutS, timeout_s)

        async def call_tool(session: Any) -> Any:
            return await session.call_tool(remote, call.input if isinstance(call.input, dict) else {})

        try:
            result = await asyncio.wait_for(self._session_call(execute, timeout, call_tool), timeout)
        except TimeoutError:
            raise ToolFailure(f"The tool {tool.name} did not answer within {timeout:g} s.") from None
        except ToolFailure:
            raise
        except Exception as exc:
            get_logger().warning("mcp tool failed", extra={"tool": tool.name, "error": type(exc).__name__})
            raise ToolFailure(f"The tool {tool.name} could not be reached.") from None
        texts = [getattr(c, "text", "") for c in result.content if getattr(c, "type", "") == "text"]
        if result.isError:
            raise ToolFailure(safe_message(" ".join(texts) or f"The tool {tool.name} failed.", 500))
        if result.structuredContent is not None:
            return result.structuredContent
        if len(texts) == 1:
            try:
                return json.loads(texts[0])
            except ValueError:
                return texts[0]
        return [c.model_dump(mode="json", exclude_none=True) for c in result.content]


def _server_name(url: str) -> str:
    """The server's host and port for logs: a URL's path or query may carry a token."""
    from urllib.parse import urlsplit

    return urlsplit(url).netloc.rpartition("@")[2]


# --- The per-process registry and the per-turn toolset ----------------------------------------


class ToolRegistry:
    """The operator's server tools (one per process) and how to run them."""

    def __init__(self, settings: Settings, tools: dict[str, ServerTool] | None = None,
                 mcp: McpExecutor | None = None) -> None:
        self.settings = settings
        self._tools = tools if tools is not None else load_tools(settings)  # a bad document fails the cold start
        self.http = HttpExecutor()
        self.mcp = mcp or McpExecutor()
        self._resolved: dict[str, ServerTool] = {}

    @property
    def configured(self) -> bool:
        return bool(self._tools)

    async def server_tools(self) -> dict[str, ServerTool]:
        """The server tools, MCP ones completed from their server's list (one not reachable is left out).

        The MCP servers still to list are listed concurrently, so a slow one delays a turn by its own
        timeout at most, and a failed one not at all while it backs off (`McpExecutor`).
        """
        incomplete = {name for name, tool in self._tools.items() if isinstance(tool.execute, _McpExecute)
                      and (tool.input_schema is None or tool.description is None)}
        pending = [self._tools[name] for name in incomplete if name not in self._resolved]
        if pending:
            await asyncio.gather(*(self._resolve(tool) for tool in pending))
        return {name: self._resolved[name] if name in incomplete else tool for name, tool in self._tools.items()
                if name not in incomplete or name in self._resolved}

    async def _resolve(self, tool: ServerTool) -> None:
        """Complete an MCP tool's description and schema from its server's list (left out if unavailable)."""
        execute = tool.execute
        assert isinstance(execute, _McpExecute)
        try:
            listing = await self.mcp.listing(execute, execute.timeoutS)
        except McpServerUnavailable:
            return  # logged once per failed listing by the executor
        remote = listing.tools.get(execute.tool or tool.name)
        if remote is None:
            get_logger().warning("mcp server has no such tool", extra={"tool": tool.name})
            return
        self._resolved[tool.name] = ServerTool(tool.name, tool.description or remote.description or "",
                                               tool.input_schema or dict(remote.inputSchema), execute,
                                               tool.needs_approval)

    async def toolset(self, client_tools: tuple[ToolSpec, ...]) -> Toolset:
        """The tools one turn offers: the server's, then the client's (a name clash is a 400)."""
        server = await self.server_tools() if self._tools else {}
        clash = sorted(t.name for t in client_tools if t.name in server)
        if clash:
            raise errors.RequestError(f"Tool names {clash} are reserved by the server; rename the client tools.",
                                      param="tools")
        for spec in client_tools:
            problem = check_schema(spec.input_schema)
            if problem:
                raise errors.RequestError(f"Tool {spec.name!r}: invalid inputSchema: {problem}", param="tools")
        return Toolset(self, server, {t.name: t for t in client_tools})

    async def run(self, tool: ServerTool, call: ToolCall, timeout_s: float) -> Any:
        executor: HttpExecutor | McpExecutor = self.http if isinstance(tool.execute, _HttpExecute) else self.mcp
        return _bounded(await executor.run(tool, call, timeout_s))


@dataclass
class Toolset:
    """One turn's tools: specs for the model, and what each call needs (run here, by the client, approval)."""

    registry: ToolRegistry
    server: dict[str, ServerTool]
    client: dict[str, ToolSpec]

    def specs(self) -> tuple[ToolSpec, ...]:
        return (*(t.spec() for t in self.server.values()), *self.client.values())

    def __bool__(self) -> bool:
        return bool(self.server or self.client)

    def input_error(self, name: str, value: Any) -> str | None:
        """Why a call's input is not acceptable (unknown tool, schema mismatch), or None."""
        if name in self.server:
            schema = self.server[name].input_schema
        elif name in self.client:
            schema = self.client[name].input_schema
        else:
            return f"There is no tool named {safe_message(name, 80)}."
        problem = input_error(schema, value)
        return f"Invalid input for tool {name}: {problem}" if problem else None

    async def run(self, call: ToolCall, timeout_s: float) -> Any:
        """Run a server tool; raises `ToolFailure` with a client-safe message."""
        tool = self.server[call.name]
        try:
            return await self.registry.run(tool, call, timeout_s)
        except ToolFailure:
            raise
        except Exception as exc:  # a bug or an unexpected failure: a tool error, never a broken turn
            get_logger().warning("tool failed", extra={"tool": call.name, "error": type(exc).__name__})
            raise ToolFailure(f"The tool {call.name} failed.") from None
