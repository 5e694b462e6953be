"""The API's error bodies (catalog.api.errors), for exact assertions."""

from __future__ import annotations


def api_error(code: str, detail: str, *, attr: str | None = None, type: str = "client_error") -> dict:
    """`{"type", "errors": [{"code", "detail", "attr"}]}` with one error."""
    return {"type": type, "errors": [{"code": code, "detail": detail, "attr": attr}]}
