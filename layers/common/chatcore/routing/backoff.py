"""Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff And Jitter").

The delay before retry `n` (0-based) is uniform in [0, min(cap, base * 2**n)]: jitter spreads
the retries of many clients so they do not hit a recovering provider in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.2
    cap_s: float = 2.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def ceiling(self, attempt: int) -> float:
        """The largest delay retry `attempt` may wait."""
        return min(self.cap_s, self.base_s * (2 ** max(attempt, 0)))

    def delay(self, attempt: int) -> float:
        """A random delay for retry `attempt`, uniform between zero and its ceiling."""
        return self.rng.uniform(0.0, self.ceiling(attempt))
