"""The cost of a request, from the provider's final usage and the deployment's prices.

One function of `Usage`, used for streamed and non-streamed answers alike, so the same usage
always costs the same. Cached input tokens are part of `input_tokens` (adapters normalise to
that) and are billed at the cached price when the deployment has one.
"""

from __future__ import annotations

from chatcore.events import Usage
from chatcore.routing.registry import Deployment

PER_MILLION = 1_000_000


def cost_usd(usage: Usage | None, deployment: Deployment) -> float | None:
    """US dollars for `usage` at `deployment`'s prices; None when the usage is unknown."""
    if usage is None or (usage.input_tokens is None and usage.output_tokens is None):
        return None
    input_tokens = usage.input_tokens or 0
    cached = min(usage.cached_input_tokens or 0, input_tokens)
    cached_price = deployment.cached_input_price if deployment.cached_input_price is not None \
        else deployment.input_price
    dollars = ((input_tokens - cached) * deployment.input_price
               + cached * cached_price
               + (usage.output_tokens or 0) * deployment.output_price) / PER_MILLION
    return round(dollars, 8)
