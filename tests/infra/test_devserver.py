"""`python -m devtools.devserver` (`make dev`): the embedded emulator whatever AWS credentials the shell has,
streaming chat, conversations that survive a restart, clean shutdown; real AWS only on request."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from devtools.emulator import Emulator

from .conftest import PYTHON, REPO_ROOT, local_tool_env

STARTUP_TIMEOUT_S = 90.0  # generous: a loaded 2-core CI machine imports moto + FastAPI slowly


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DevServer:
    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.output = ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.output, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate()
        return self.process.returncode


def start_devserver(env: dict[str, str]) -> DevServer:
    """`python -m devtools.devserver` as a subprocess; returns once /healthz answers (fails the test otherwise)."""
    port = _free_port()
    process = subprocess.Popen([PYTHON, "-m", "devtools.devserver", "--no-access-log"], cwd=REPO_ROOT,
                               env={**env, "PORT": str(port)}, text=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = DevServer(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            server.stop()
            pytest.fail(f"devserver exited with {process.returncode}:\n{server.output}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"devserver did not answer /healthz:\n{server.output}")
        time.sleep(0.1)


@pytest.fixture
def devserver_env(tmp_path: Path) -> dict[str, str]:
    """A laptop whose shell has (fake) AWS credentials and a profile, as an AWS developer's does; the
    emulator's data in `tmp_path`. No LOCAL_DYNAMODB: the default must be the embedded emulator."""
    env = local_tool_env(LOCAL_DYNAMODB_DIR=str(tmp_path), AWS_ACCESS_KEY_ID="AKIAFAKEFAKEFAKEFAKE",
                         AWS_SECRET_ACCESS_KEY="fake-secret", AWS_PROFILE="no-such-profile", AWS_REGION="eu-west-1")
    del env["LOCAL_DYNAMODB"]
    return env


@pytest.fixture
def devserver(devserver_env: dict[str, str]) -> Iterator[DevServer]:
    server = start_devserver(devserver_env)
    try:
        yield server
    finally:
        server.stop()


def test_devserver_streams_chat_stores_it_in_the_emulator_and_keeps_it_across_a_restart(
        devserver: DevServer, devserver_env: dict[str, str], tmp_path: Path,
        sse_data: Callable[[bytes], list[str]]) -> None:
    """With (fake) AWS credentials in the shell, chats stream, are stored in the embedded emulator (never
    real AWS) and listed; stopping `make dev` saves them to the data directory, and a restart finds them."""
    assert httpx.get(f"{devserver.base_url}/healthz").json() == {"status": "ok"}

    body = {"id": "devserver-test", "model": "mock/lorem?tokens=12&pace_ms=40&ttft_ms=0",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Say hello"}]}],
            "trigger": "submit-message"}
    reads: list[bytes] = []
    with httpx.stream("POST", f"{devserver.base_url}/api/chat", json=body, timeout=60) as response:
        if response.status_code != 200:
            response.read()
            devserver.stop()
            pytest.fail(f"POST /api/chat -> {response.status_code} {response.text}\n{devserver.output}")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        reads.extend(response.iter_raw())
    events = sse_data(b"".join(reads))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["type"] == "start" and chunks[-1]["type"] == "finish"
    deltas = [chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta"]
    assert len(deltas) == 12 and "".join(deltas).startswith("Lorem ipsum")
    # Twelve deltas 40 ms apart arrive over several socket reads: the body is streamed, not buffered.
    assert len(reads) > 1

    _chat(devserver.base_url, "kept-1", "first question")
    _chat(devserver.base_url, "kept-1", "second question")
    listed = httpx.get(f"{devserver.base_url}/api/conversations", timeout=30).json()["conversations"]
    assert sorted((c["id"], c["messageCount"]) for c in listed) == [("devserver-test", 2), ("kept-1", 4)]

    assert devserver.stop() == 0
    match = re.search(r"embedded moto at http://127\.0\.0\.1:(\d+) \(pid (\d+)\)", devserver.output)
    assert match, devserver.output
    assert int(match[2]) != devserver.process.pid  # the emulator is a process of its own
    assert "Embedded DynamoDB emulator stopped." in devserver.output
    assert "curl -N" in devserver.output and "/api/chat/sse" in devserver.output
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(match[1]))) != 0
    assert f"data: {tmp_path}/" in devserver.output
    assert (tmp_path / "moto-dynamodb.pickle").is_file()

    again = start_devserver(devserver_env)
    try:
        listed = httpx.get(f"{again.base_url}/api/conversations", timeout=30).json()["conversations"]
        assert sorted(c["id"] for c in listed) == ["devserver-test", "kept-1"]
        history = httpx.get(f"{again.base_url}/api/conversations/kept-1", timeout=30).json()
        assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]
    finally:
        again.stop()


def _chat(base_url: str, conversation: str, text: str) -> None:
    body = {"id": conversation, "model": "mock/echo?ttft_ms=0&pace_ms=0", "trigger": "submit-message",
            "messages": [{"id": f"m-{uuid.uuid4().hex[:8]}", "role": "user", "parts": [{"type": "text", "text": text}]}]}
    response = httpx.post(f"{base_url}/api/chat", json=body, timeout=60)
    assert response.status_code == 200, response.text
    chunks = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert "".join(chunk.get("delta", "") for chunk in chunks if chunk["type"] == "text-delta") == f"You said: {text}"


def test_real_aws_on_request_fails_at_startup_naming_the_missing_table(devserver_env: dict[str, str],
                                                                       aws_emulator: Emulator) -> None:
    """`LOCAL_DYNAMODB=aws` with botocore's endpoint override standing in for AWS: a clear error, exit 2."""
    env = {**devserver_env, "LOCAL_DYNAMODB": "aws", "TABLE_NAME": "chat-not-deployed",
           "AWS_ENDPOINT_URL_DYNAMODB": aws_emulator.endpoint}
    del env["AWS_PROFILE"]
    result = subprocess.run([PYTHON, "-m", "devtools.devserver"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=STARTUP_TIMEOUT_S)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'chat-not-deployed' does not exist" in result.stderr and "sam deploy" in result.stderr
    assert "Traceback" not in result.stderr


def test_with_api_key_auth_the_banner_gives_a_working_key_kept_across_restarts(
        devserver_env: dict[str, str], tmp_path: Path) -> None:
    """`AUTH_MODE=api_key make dev`: a key for `local-user` is created in the emulator and printed (the
    deployed table's `make apikey` cannot reach the emulator); a restart reuses it, and without it, 401."""
    env = {**devserver_env, "AUTH_MODE": "api_key"}
    keys: list[str] = []
    for _ in range(2):
        server = start_devserver(env)
        try:
            body = {"messages": [{"role": "user", "content": "Say hello"}], "model": "mock/echo"}
            assert httpx.post(f"{server.base_url}/api/chat/sse", json=body, timeout=30).status_code == 401
        finally:
            assert server.stop() == 0
        match = re.search(r"API key for local-user \(tier pro\): (\S+)", server.output)
        assert match, server.output
        keys.append(match[1])
        assert f"-H 'x-api-key: {match[1]}'" in server.output  # the curl examples carry it
    assert keys[0] == keys[1]
    assert (tmp_path / "local-api-key").read_text().strip() == keys[0]

    server = start_devserver(env)
    try:
        response = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=30, headers={"x-api-key": keys[0]},
                              json={"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    finally:
        server.stop()
