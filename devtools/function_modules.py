"""Load a function's entry module (`functions/<name>/...`) by path under a unique module name.

Two functions have an entry module called `app`, so they are never put on `sys.path`; each is loaded
as `<function>_<stem>` (`chat_main`, `health_app`, `summarize_app`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = REPO_ROOT / "functions"
ENTRY_FILES = {"chat": "main.py", "health": "app.py", "summarize": "app.py"}


def entry_path(function: str) -> Path:
    """Path of the function's entry module; `ValueError` for an unknown function name."""
    if function not in ENTRY_FILES:
        raise ValueError(f"unknown function {function!r}; expected one of {', '.join(ENTRY_FILES)}")
    return FUNCTIONS_DIR / function / ENTRY_FILES[function]


def load_entry_module(function: str) -> ModuleType:
    """Import (once) and return the entry module of `function`."""
    path = entry_path(function)
    name = f"{function}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path.relative_to(REPO_ROOT)} does not exist")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
