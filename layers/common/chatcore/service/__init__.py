"""The chat and health services: what every entry point calls."""
