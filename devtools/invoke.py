"""Run a function's handler in-process on an event file: `python -m devtools.invoke FN EVENT_FILE`.

`health` and `summarize` call `functions/<fn>/app.py::handler(event, FakeLambdaContext)` and print the
result as JSON. `chat` runs behind the Lambda Web Adapter in Lambda; here the Function URL event goes
through Mangum wrapping the same FastAPI app, so the response is buffered (fine for checking routes,
bodies and headers; use `make dev` to see streaming). DynamoDB is chosen as for the dev server
(`devtools.local_dynamodb`: the embedded emulator, with the same `.dev/dynamodb/` data, unless
`LOCAL_DYNAMODB=aws` or `DYNAMODB_ENDPOINT_URL`). The result goes to stdout; logs and EMF metrics go to stderr.
Exit status: 0, 1 when the chat response is 4xx/5xx, 2 when the event or function cannot be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from devtools.function_modules import ENTRY_FILES, load_entry_module
from devtools.lambda_context import FakeLambdaContext
from devtools.local_dynamodb import LocalDynamoDBError, start_local_dynamodb

LOCAL_DEFAULTS = {"AUTH_MODE": "none", "STAGE": "local"}


def invoke(function: str, event: dict[str, Any]) -> Any:
    """Run `function` on `event` in this process and return what Lambda would return.

    The environment (DynamoDB endpoint, table) must already be set up.
    """
    context = FakeLambdaContext(function_name=f"local-{function}")
    if function == "chat":
        from mangum import Mangum

        app = load_entry_module("chat").app
        response = Mangum(app, lifespan="off")(event, context)
        # uvicorn's loop keeps running after a response, so finished streams close (and log and emit
        # their metrics); Mangum stops its loop at once. Give that clean-up its turn.
        loop = asyncio.get_event_loop()
        loop.run_until_complete(loop.shutdown_asyncgens())
        return response
    handler = load_entry_module(function).handler
    return handler(event, context)


def format_http_response(response: dict[str, Any]) -> str:
    """Status line, headers and decoded body of a buffered Function URL response."""
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", errors="replace")
    lines = [f"HTTP {response.get('statusCode')}"]
    lines += [f"{name}: {value}" for name, value in sorted((response.get("headers") or {}).items())]
    lines += ["", body]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.invoke", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("function", choices=sorted(ENTRY_FILES), help="which function to run")
    parser.add_argument("event_file", type=Path, help="event JSON, e.g. events/chat-function-url.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        event = json.loads(args.event_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"cannot read event {args.event_file}: {exc}", file=sys.stderr)
        return 2
    for name, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)

    try:
        database = start_local_dynamodb()
    except LocalDynamoDBError as exc:
        print(f"cannot run {args.function}: {exc}", file=sys.stderr)
        return 2
    try:
        print(database.describe(), file=sys.stderr)
        # Handlers log and emit EMF metrics on stdout, as in Lambda; keep stdout for the result.
        with contextlib.redirect_stdout(sys.stderr):
            result = invoke(args.function, event)
    except FileNotFoundError as exc:
        print(f"cannot run {args.function}: {exc}", file=sys.stderr)
        return 2
    finally:
        database.stop()

    if args.function == "chat":
        print(format_http_response(result))
        return 0 if int(result.get("statusCode", 500)) < 400 else 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
