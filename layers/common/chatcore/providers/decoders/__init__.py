"""Incremental decoders for the byte streams providers send (SSE, NDJSON, AWS event stream)."""
