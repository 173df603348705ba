"""Which models each tier may use: `MODEL_ACCESS_JSON`, tier name -> allowed names or patterns.

`{"free": ["fast", "default"], "pro": ["*"], "partner": ["openai/*", "standard"]}`: a pattern is
matched (`fnmatch`, case-sensitive) against the name the request asked for (a deployment, alias,
tier or `provider/model`; the default model when it named none). A tier the document does not
list uses the `"*"` entry if there is one, else may use everything; without the setting, every
tier may use every model. Refusals are 400s, like an unknown model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from chatcore import errors


@dataclass(frozen=True)
class ModelAccess:
    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: str | None) -> ModelAccess:
        """Parse `MODEL_ACCESS_JSON`. Raises `ValueError` on a malformed document (at cold start)."""
        if not raw:
            return cls()
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"MODEL_ACCESS_JSON is not valid JSON: {exc}") from exc
        if not isinstance(document, dict) or not all(
                isinstance(v, list) and all(isinstance(p, str) and p for p in v) for v in document.values()):
            raise ValueError("MODEL_ACCESS_JSON must map tier names to lists of model names or patterns")
        return cls({tier: tuple(names) for tier, names in document.items()})

    def allows(self, tier: str, requested: str) -> bool:
        """Whether `tier` may use the model named `requested`."""
        allowed = self.patterns.get(tier, self.patterns.get("*"))
        return allowed is None or any(fnmatchcase(requested, pattern) for pattern in allowed)

    def check(self, tier: str, requested: str) -> None:
        """Raise `RequestError` when `tier` may not use the model it `requested`."""
        if self.allows(tier, requested):
            return
        allowed = self.patterns.get(tier, self.patterns.get("*")) or ()
        raise errors.RequestError(f"Model {requested!r} is not available on your plan. Allowed: {', '.join(allowed)}.",
                                  valid=list(allowed))
