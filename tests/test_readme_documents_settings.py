"""Every environment variable the code reads is documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READ = re.compile(r"""(?:_str|_int|_float|_bool|_list|environ\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
SCANNED = [REPO / "layers" / "common" / "chatcore", REPO / "functions", REPO / "devtools"]
NOT_OURS = {"AWS_LAMBDA_FUNCTION_NAME", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API"}  # set by Lambda or the AWS SDK's own configuration


def variables_read() -> set[str]:
    found: set[str] = set()
    for root in SCANNED:
        for path in root.rglob("*.py"):
            found |= set(READ.findall(path.read_text(encoding="utf-8")))
    return found - NOT_OURS


def test_every_environment_variable_read_by_the_code_is_in_the_readme() -> None:
    names = variables_read()
    assert "OPENAI_API_KEY" in names and "TABLE_NAME" in names  # the scan itself works
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = sorted(name for name in names if f"`{name}`" not in readme and f"`{name}` **T**" not in readme)
    assert not missing, f"not documented in README.md: {missing}"
