"""Per-tier limits: requests and tokens per minute, tokens per day, concurrent streams.

Defaults per tier below; `LIMITS_JSON` overrides any of them, e.g.
`{"free": {"requests_per_minute": 10}, "pro": {"tokens_per_day": 5000000}}`. A new tier name
starts from `free`'s limits; unknown keys or non-positive values are rejected at cold start (a typo
must not silently change a limit). A caller whose tier is not in the policy is limited as `free`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

DEFAULT_TIER = "free"


@dataclass(frozen=True, slots=True)
class TierLimits:
    requests_per_minute: int
    tokens_per_minute: int
    tokens_per_day: int
    concurrent_streams: int

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{item.name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS: dict[str, TierLimits] = {
    "free": TierLimits(requests_per_minute=20, tokens_per_minute=40_000, tokens_per_day=300_000,
                       concurrent_streams=2),
    "pro": TierLimits(requests_per_minute=60, tokens_per_minute=200_000, tokens_per_day=3_000_000,
                      concurrent_streams=5),
    "enterprise": TierLimits(requests_per_minute=300, tokens_per_minute=1_000_000, tokens_per_day=30_000_000,
                             concurrent_streams=20),
}


@dataclass(frozen=True)
class LimitPolicy:
    tiers: dict[str, TierLimits]

    def for_tier(self, tier: str) -> TierLimits:
        """The limits of `tier`, or of `free` for a tier the policy does not know."""
        return self.tiers.get(tier) or self.tiers[DEFAULT_TIER]

    @classmethod
    def from_json(cls, raw: str | None) -> LimitPolicy:
        """The default policy with `LIMITS_JSON` merged over it. Raises `ValueError` on bad input."""
        tiers = dict(DEFAULT_LIMITS)
        if not raw:
            return cls(tiers)
        try:
            overrides = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"LIMITS_JSON is not valid JSON: {exc}") from exc
        if not isinstance(overrides, dict):
            raise ValueError("LIMITS_JSON must be an object of tier name -> limits")
        names = {item.name for item in dataclasses.fields(TierLimits)}
        for tier, values in overrides.items():
            if not isinstance(values, dict):
                raise ValueError(f"LIMITS_JSON[{tier!r}] must be an object")
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"LIMITS_JSON[{tier!r}] has unknown keys {sorted(unknown)}; allowed: {sorted(names)}")
            base = tiers.get(tier, tiers[DEFAULT_TIER])
            tiers[tier] = dataclasses.replace(base, **values)
        return cls(tiers)
