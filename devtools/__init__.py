"""Development-only tooling (never shipped to Lambda): template tables, the dev server, the invoke tool."""
