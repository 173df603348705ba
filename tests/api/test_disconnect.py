"""A client that leaves stops the upstream call even while the model is silent (long reasoning, slow
tokens): the app notices the disconnect from the ASGI `receive` channel, not only when a write fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from chatcore.providers.openai import OpenAIProvider

from tests.providers.test_cancellation import UPSTREAMS, WAIT_S, EndlessUpstream


async def test_an_abort_during_a_silent_model_closes_the_upstream(chat_server: Callable[..., str]) -> None:
    content_type, opening, piece, _ = UPSTREAMS["openai"]
    upstream = EndlessUpstream(content_type, opening, piece, pieces_before_stall=1)  # one token, then silence
    async with upstream as url:
        base = chat_server(providers={"slow": OpenAIProvider(api_key="k", base_url=f"{url}/v1")},
                           idle_timeout_s=10 * WAIT_S, first_token_timeout_s=10 * WAIT_S)
        body = {"model": "slow/m", "messages": [{"role": "user", "content": "think hard"}]}
        async with httpx.AsyncClient(timeout=WAIT_S) as client, \
                client.stream("POST", f"{base}/api/chat", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if '"text-delta"' in line:
                    break  # the first token arrived; now the client goes away while the model is silent
        # Nothing more is written to the client, so only the receive channel can tell the app.
        await asyncio.wait_for(upstream.disconnected.wait(), WAIT_S)
    assert upstream.requests == 1
