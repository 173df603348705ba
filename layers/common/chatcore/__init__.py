"""Shared core of the streaming chat backend: providers, routing, memory, limits and wire protocols.

Every Lambda function (chat, health, summarize) imports from this package, which ships in the
common layer. Nothing here does I/O at import time.
"""

__version__ = "0.1.0"
