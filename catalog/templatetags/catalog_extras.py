"""Small template helpers for the marketplace pages."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def get_item(mapping: dict[Any, Any] | None, key: Any) -> Any:
    """`{{ paths|get_item:listing.category_id }}`: a dict lookup with a variable key."""
    return (mapping or {}).get(key)


@register.filter
def status_label(status: str) -> str:
    """A seller-facing word for a photo's classification status."""
    return {"pending": "Waiting", "queued": "Analysing", "done": "Analysed", "failed": "Failed"}.get(
        status, status
    )
